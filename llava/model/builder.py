"""`load_pretrained_model`: LLaVA-NeXT's loading entry point, same signature and return value, on our model.

Path or hub id in, `(tokenizer, model, image_processor, context_len)` out. The checkpoint format is detected from
config.json content; `model_name` is read here only, in `zip_requested` (LLaVA-Scissor's "zip in the name switches
compression on", reference/ecosystem.md 1.3). dtype "auto" = bf16 on CUDA, fp32 on CPU; attention defaults to
sdpa (flash_attention_2 only when flash-attn is installed and CUDA is available); device_map "auto" spreads the
model over several GPUs with accelerate.
"""
from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from llava.compression import CompressionConfig
from llava.model.checkpoint import read_config, read_weights, resolve_checkpoint, to_our_names, weight_files
from llava.model.image_processor import SiglipVideoProcessor
from llava.model.model_config import (
    ATTENTION_NAMES,
    ModelConfig,
    NewlinePolicy,
    parse_model_config,
    resolve_compression,
)
from llava.model.modeling import LlavaOnevisionVideoModel

logger = logging.getLogger(__name__)

DTYPES = {"float16": torch.float16, "fp16": torch.float16, "half": torch.float16, "bfloat16": torch.bfloat16,
          "bf16": torch.bfloat16, "float32": torch.float32, "fp32": torch.float32, "float": torch.float32}
ATTENTION = tuple(name for name in ATTENTION_NAMES if name != "auto")  # "auto" is spelled None here
NO_SPLIT = ["Qwen2DecoderLayer", "SiglipEncoderLayer"]
DEFAULT_CONTEXT = 2048
STOP_TOKEN = "<|im_end|>"
IGNORED_KWARGS = ("multimodal", "customized_config")  # LLaVA-NeXT / lmms-eval pass them; nothing to do here


def zip_requested(model_name: str | None) -> bool:
    """LLaVA-Scissor selects its compressing model class when "zip" is in model_name; the only name test."""
    return model_name is not None and "zip" in model_name.lower()


def resolve_dtype(torch_dtype: str | torch.dtype | None) -> torch.dtype:
    """"auto"/None -> bf16 on CUDA, fp32 on CPU; else a dtype or its name."""
    if isinstance(torch_dtype, torch.dtype):
        return torch_dtype
    if torch_dtype in (None, "auto"):
        return torch.bfloat16 if torch.cuda.is_available() else torch.float32
    if torch_dtype not in DTYPES:
        raise ValueError(f"torch_dtype must be 'auto', a torch.dtype or one of {sorted(DTYPES)}, got {torch_dtype!r}")
    return DTYPES[torch_dtype]


def resolve_attention(attn_implementation: str | None) -> str:
    """sdpa by default; flash_attention_2 only where it can run (else sdpa, which computes the same thing)."""
    flash_ok = torch.cuda.is_available() and importlib.util.find_spec("flash_attn") is not None
    if attn_implementation is None:
        return "flash_attention_2" if flash_ok else "sdpa"
    if attn_implementation not in ATTENTION:
        raise ValueError(f"attn_implementation must be one of {list(ATTENTION)}, got {attn_implementation!r}")
    if attn_implementation == "flash_attention_2" and not flash_ok:
        logger.warning("flash_attention_2 needs flash-attn and CUDA; using sdpa")
        return "sdpa"
    return attn_implementation


def build_model(
    checkpoint_dir: Path,
    dtype: torch.dtype,
    compression: CompressionConfig | None = None,
    zip_in_name: bool = False,
    newline: NewlinePolicy = "auto",
    attn_implementation: str = "sdpa",
    allow_pickle: bool = False,
    overwrite_config: dict[str, Any] | None = None,
) -> LlavaOnevisionVideoModel:
    """Config + weights of a checkpoint dir -> our model on CPU in `dtype` (built empty, weights assigned), with
    the compression in effect resolved (`resolve_compression`)."""
    from accelerate import init_empty_weights

    config = parse_model_config({**read_config(checkpoint_dir), **(overwrite_config or {})})
    state, unmatched = to_our_names(read_weights(weight_files(checkpoint_dir, allow_pickle), dtype), config)
    if unmatched:
        raise ValueError(f"unexpected weights in {checkpoint_dir} (no key rule for them): {sorted(unmatched)}")
    with init_empty_weights():
        model = LlavaOnevisionVideoModel(config, None, newline, attn_implementation)
    model.load_weights(state, assign=True)
    model.default_compression = resolve_compression(config, compression, zip_in_name)
    return model.eval()


def place_model(model: nn.Module, device_map: str | dict | torch.device | None) -> nn.Module:
    """"auto": all GPUs via accelerate (one GPU: .to it; none: CPU); a dict: accelerate dispatch; else a device."""
    if isinstance(device_map, dict) and set(device_map) == {""}:
        device_map = device_map[""]
    if isinstance(device_map, dict):
        from accelerate import dispatch_model

        return dispatch_model(model, device_map=device_map)
    if device_map in (None, "auto"):
        n_gpus = torch.cuda.device_count()
        if n_gpus > 1:
            from accelerate import dispatch_model, infer_auto_device_map

            auto_map = infer_auto_device_map(model, no_split_module_classes=NO_SPLIT, dtype=model.dtype)
            return dispatch_model(model, device_map=auto_map)
        return model.to("cuda" if n_gpus == 1 else "cpu")
    return model.to(device_map)


def context_length(config: ModelConfig) -> int:
    """LLaVA-NeXT's order: max_sequence_length -> max_position_embeddings -> tokenizer_model_max_length -> 2048."""
    for value in (config.max_sequence_length, config.text.max_position_embeddings, config.tokenizer_model_max_length):
        if value:
            return int(value)
    return DEFAULT_CONTEXT


def load_pretrained_model(
    model_path: str | Path,
    model_base: str | None = None,
    model_name: str | None = None,
    load_8bit: bool = False,
    load_4bit: bool = False,
    device_map: str | dict | torch.device | None = "auto",
    torch_dtype: str | torch.dtype | None = "auto",
    attn_implementation: str | None = None,
    compression: CompressionConfig | None = None,
    newline: NewlinePolicy = "auto",
    overwrite_config: dict[str, Any] | None = None,
    allow_pickle: bool = False,
    device: str | None = None,
    revision: str | None = None,
    **kwargs: Any,
) -> tuple[Any, LlavaOnevisionVideoModel, SiglipVideoProcessor, int]:
    """Load a LLaVA-OneVision checkpoint (LLaVA-NeXT or llava-hf format) as (tokenizer, model, processor, ctx).

    compression: the run's CompressionConfig; it wins over the checkpoint's `mm_use_zip` / `mm_zip_*` and over a
    "zip" model_name. newline: "auto" (checkpoint layout when not compressing, none when compressing),
    "one_token", "frame" or "none". allow_pickle: permit `.bin` weights (unpickling; off by default).
    """
    _reject_unsupported(model_base, load_8bit, load_4bit, kwargs)
    from transformers import AutoTokenizer

    checkpoint_dir = resolve_checkpoint(model_path, revision)
    model = build_model(
        checkpoint_dir, resolve_dtype(torch_dtype), compression, zip_requested(model_name), newline,
        resolve_attention(attn_implementation), allow_pickle, overwrite_config,
    )
    tokenizer = AutoTokenizer.from_pretrained(str(checkpoint_dir))
    model.stop_token_ids = _stop_ids(tokenizer, model.config)
    model = place_model(model, {"": device} if device is not None else device_map)
    processor = SiglipVideoProcessor(image_size=model.config.vision.image_size)
    logger.info("loaded %s (%s format), default compression %s", checkpoint_dir, model.config.source_format,
                model.default_compression)
    return tokenizer, model, processor, context_length(model.config)


def _stop_ids(tokenizer: Any, config: ModelConfig) -> list[int]:
    ids = [tokenizer.convert_tokens_to_ids(STOP_TOKEN)] if STOP_TOKEN in tokenizer.get_vocab() else []
    eos = config.text.eos_token_id
    for extra in eos if isinstance(eos, list) else [eos]:
        if extra is not None and extra not in ids:
            ids.append(extra)
    return ids


def _reject_unsupported(model_base: str | None, load_8bit: bool, load_4bit: bool, kwargs: dict[str, Any]) -> None:
    if model_base is not None:
        raise ValueError(f"model_base={model_base!r}: LoRA / projector-only merging is not supported; pass a full "
                         "checkpoint as model_path and model_base=None")
    if load_8bit or load_4bit:
        raise ValueError("load_8bit / load_4bit are not supported; load in bf16/fp16 (torch_dtype) instead")
    unknown = sorted(set(kwargs) - set(IGNORED_KWARGS))
    if unknown:
        raise TypeError(f"load_pretrained_model got unexpected arguments {unknown}")
    if kwargs.get("customized_config") is not None:
        raise ValueError("customized_config is not supported; use overwrite_config={key: value} instead")
