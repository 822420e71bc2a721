"""vLLM plugin entry point: registers the SCC-compressing LLaVA-OneVision architecture with vLLM's model registry.

vLLM calls `register` in every process it starts (front end, engine core, workers) through the
`vllm.general_plugins` entry point (`llava_scissor` in setup.py), so it must be cheap and idempotent: it
registers by "module:Class" string (vLLM imports the model only when it builds one) and re-registering the same
name simply overwrites it.

Selecting the model: `--hf-overrides '{"architectures": ["LlavaScissorOnevisionForConditionalGeneration"]}'`
(`LLM(..., hf_overrides=...)`), which `scripts/serve.sh` passes. Opt-in: with LLAVA_SCISSOR_REPLACE_STOCK=1 in
the environment, the stock architecture name `LlavaOnevisionForConditionalGeneration` is served by our class too,
so unmodified llava-hf checkpoints pick it up without overrides.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Mapping

logger = logging.getLogger(__name__)

ARCHITECTURE = "LlavaScissorOnevisionForConditionalGeneration"
STOCK_ARCHITECTURE = "LlavaOnevisionForConditionalGeneration"
MODEL_CLASS = f"llava.serving.vllm_model:{ARCHITECTURE}"
REPLACE_STOCK_ENV = "LLAVA_SCISSOR_REPLACE_STOCK"


def architectures_to_register(environ: Mapping[str, str] = os.environ) -> list[str]:
    """Ours always; the stock name too when REPLACE_STOCK_ENV is "1" (any other value than "0"/"" is an error)."""
    flag = environ.get(REPLACE_STOCK_ENV, "")
    if flag not in ("", "0", "1"):
        raise ValueError(f"{REPLACE_STOCK_ENV} must be 1 (serve llava-hf checkpoints with SCC) or 0, got {flag!r}")
    return [ARCHITECTURE, STOCK_ARCHITECTURE] if flag == "1" else [ARCHITECTURE]


def register() -> None:
    """Register our architecture name(s) with vLLM's ModelRegistry (lazily, by module path)."""
    from vllm import ModelRegistry

    for architecture in architectures_to_register():
        ModelRegistry.register_model(architecture, MODEL_CLASS)
        logger.debug("registered %s -> %s", architecture, MODEL_CLASS)
