"""`load_pretrained_model`: LLaVA-NeXT's loading entry point, same signature and return value, on our model.

Path or hub id in, `(tokenizer, model, image_processor, context_len)` out. The checkpoint format is detected from
config.json content; `model_name` is read here only, in `zip_requested` (LLaVA-Scissor's "zip in the name switches
compression on"). The default dtype is float16, as in LLaVA-NeXT's and LLaVA-Scissor's builders: lmms-eval's
`llava_onevision` class passes none, and the paper's numbers were made in fp16 ("auto" = bf16 on CUDA and on CPUs
with native bf16 matmuls, else fp32, is what our CLI asks for). Attention defaults to sdpa (flash_attention_2 only
when flash-attn is installed and CUDA is available); device_map "auto" spreads the model over several GPUs with
accelerate.

What a checkpoint configures, in order: config.json, or `customized_config` in its place (a config object, a dict
or a JSON file); then `overwrite_config` key by key (lmms-eval sends `mm_spatial_pool_stride` / `_mode` this way);
then the run's `compression`, if given, over the checkpoint's `mm_use_zip` / `mm_zip_*` keys. The checkpoint's
generation_config.json, when there is one, becomes the language model's generation defaults, as transformers'
`from_pretrained` does (Qwen fine-tunes carry `repetition_penalty: 1.05`).
"""
from __future__ import annotations

import importlib.util
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from llava.compression import CompressionConfig
from llava.config_types import ATTENTION_NAMES, NewlinePolicy
from llava.model.checkpoint import read_config, read_weights, resolve_checkpoint, to_our_names, weight_files
from llava.model.image_processor import SiglipVideoProcessor
from llava.model.model_config import ModelConfig, parse_model_config, resolve_compression
from llava.model.modeling import LlavaOnevisionVideoModel

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

DTYPES = {"float16": torch.float16, "fp16": torch.float16, "half": torch.float16, "bfloat16": torch.bfloat16,
          "bf16": torch.bfloat16, "float32": torch.float32, "fp32": torch.float32, "float": torch.float32}
ATTENTION = tuple(name for name in ATTENTION_NAMES if name != "auto")  # "auto" is spelled None here
NO_SPLIT = ["Qwen2DecoderLayer", "SiglipEncoderLayer"]
DEFAULT_CONTEXT = 2048
STOP_TOKEN = "<|im_end|>"
GENERATION_CONFIG_FILE = "generation_config.json"
IGNORED_KWARGS = ("multimodal",)  # LLaVA-NeXT / lmms-eval pass it; this package always loads the multimodal model


def zip_requested(model_name: str | None) -> bool:
    """LLaVA-Scissor selects its compressing model class when "zip" is in model_name; the only name test."""
    return model_name is not None and "zip" in model_name.lower()


def cpu_has_native_bf16() -> bool:
    """True where the CPU multiplies bf16 natively (AVX512-BF16 or AMX tiles). There bf16 runs the tower and the
    LLM 2.5-3x faster than fp32; on CPUs without it (AVX2 only) PyTorch emulates bf16 and it is many times
    slower than fp32."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def resolve_dtype(torch_dtype: str | torch.dtype | None) -> torch.dtype:
    """"auto"/None -> bf16 on CUDA; on CPU bf16 where the CPU has native bf16 matmuls, else fp32 (the fastest
    dtype that computes the model correctly there); else a dtype or its name."""
    if isinstance(torch_dtype, torch.dtype):
        return torch_dtype
    if torch_dtype in (None, "auto"):
        return torch.bfloat16 if torch.cuda.is_available() or cpu_has_native_bf16() else torch.float32
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


def customized_raw_config(customized_config: Any) -> dict[str, Any]:
    """LLaVA-NeXT's `customized_config` (used instead of config.json) as a dict: a transformers config object
    (`to_dict()`), a mapping, or the path of a JSON file."""
    if isinstance(customized_config, Mapping):
        return dict(customized_config)
    if hasattr(customized_config, "to_dict"):
        return customized_config.to_dict()
    if isinstance(customized_config, (str, Path)):
        path = Path(customized_config).expanduser()
        if not path.is_file():
            raise ValueError(f"customized_config {str(customized_config)!r} is not a file; pass the path of a "
                             "config.json-style JSON file, a dict or a transformers config object")
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"customized_config {str(path)!r} is not valid JSON ({err})") from err
    raise TypeError(f"customized_config must be a config object, a dict or a JSON file path, got "
                    f"{type(customized_config).__name__}")


def attach_generation_config(model: LlavaOnevisionVideoModel, checkpoint_dir: Path) -> None:
    """The checkpoint's generation_config.json (if any) as the LM's generation defaults; `generate` kwargs still
    win, as in transformers."""
    if not (checkpoint_dir / GENERATION_CONFIG_FILE).is_file():
        return
    from transformers import GenerationConfig

    model.language_model.generation_config = GenerationConfig.from_pretrained(str(checkpoint_dir))
    logger.info("generation defaults from %s: %s", GENERATION_CONFIG_FILE,
                model.language_model.generation_config.to_diff_dict())


def build_model(
    checkpoint_dir: Path,
    dtype: torch.dtype,
    compression: CompressionConfig | None = None,
    zip_in_name: bool = False,
    newline: NewlinePolicy = "auto",
    attn_implementation: str = "sdpa",
    allow_pickle: bool = False,
    overwrite_config: dict[str, Any] | None = None,
    raw_config: dict[str, Any] | None = None,
) -> LlavaOnevisionVideoModel:
    """Config + weights of a checkpoint dir -> our model on CPU in `dtype` (built empty, weights assigned), with
    the compression in effect resolved (`resolve_compression`) and the checkpoint's generation defaults.

    raw_config: the config.json content when the caller has already read it (or a customized config in its
    place); None reads `checkpoint_dir`'s config.json."""
    from accelerate import init_empty_weights

    raw = read_config(checkpoint_dir) if raw_config is None else raw_config
    config = parse_model_config({**raw, **(overwrite_config or {})})
    state, unmatched = to_our_names(read_weights(weight_files(checkpoint_dir, allow_pickle), dtype), config)
    if unmatched:
        raise ValueError(f"unexpected weights in {checkpoint_dir} (no key rule for them): {sorted(unmatched)}")
    with init_empty_weights():
        model = LlavaOnevisionVideoModel(config, None, newline, attn_implementation)
    model.load_weights(state, assign=True)
    model.default_compression = resolve_compression(config, compression, zip_in_name)
    attach_generation_config(model, checkpoint_dir)
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


def load_from_dir(
    checkpoint_dir: Path,
    raw_config: dict[str, Any],
    device_map: str | dict | torch.device | None = "auto",
    torch_dtype: str | torch.dtype | None = "float16",
    attn_implementation: str | None = None,
    compression: CompressionConfig | None = None,
    newline: NewlinePolicy = "auto",
    zip_in_name: bool = False,
    overwrite_config: dict[str, Any] | None = None,
    allow_pickle: bool = False,
) -> tuple[PreTrainedTokenizerBase, LlavaOnevisionVideoModel, SiglipVideoProcessor]:
    """A resolved checkpoint directory and its config (`raw_config`, read once by the caller) -> (tokenizer, model
    placed per `device_map`, processor). The keywords are `load_pretrained_model`'s."""
    from transformers import AutoTokenizer

    model = build_model(
        checkpoint_dir, resolve_dtype(torch_dtype), compression, zip_in_name, newline,
        resolve_attention(attn_implementation), allow_pickle, overwrite_config, raw_config,
    )
    tokenizer = AutoTokenizer.from_pretrained(str(checkpoint_dir))
    model.stop_token_ids = _stop_ids(tokenizer, model.config)
    model = place_model(model, device_map)
    processor = SiglipVideoProcessor(image_size=model.config.vision.image_size)
    logger.info("loaded %s (%s format), default compression %s", checkpoint_dir, model.config.source_format,
                model.default_compression)
    return tokenizer, model, processor


def load_pretrained_model(
    model_path: str | Path,
    model_base: str | None = None,
    model_name: str | None = None,
    load_8bit: bool = False,
    load_4bit: bool = False,
    device_map: str | dict | torch.device | None = "auto",
    torch_dtype: str | torch.dtype | None = "float16",
    attn_implementation: str | None = None,
    compression: CompressionConfig | None = None,
    newline: NewlinePolicy = "auto",
    overwrite_config: dict[str, Any] | None = None,
    customized_config: Any = None,
    allow_pickle: bool = False,
    device: str | None = None,
    revision: str | None = None,
    **kwargs: Any,
) -> tuple[PreTrainedTokenizerBase, LlavaOnevisionVideoModel, SiglipVideoProcessor, int]:
    """Load a LLaVA-OneVision checkpoint (LLaVA-NeXT or llava-hf format) as (tokenizer, model, processor, ctx).

    torch_dtype: float16 by default (LLaVA-NeXT's); "auto" = bf16 on CUDA and on CPUs with native bf16, else
    fp32. compression: the run's CompressionConfig; it wins over the checkpoint's `mm_use_zip` / `mm_zip_*` and
    over a "zip" model_name.
    newline: "auto" (checkpoint layout when not compressing, none when compressing), "one_token", "frame" or
    "none". overwrite_config: config.json keys to replace (e.g. {"mm_spatial_pool_stride": 4}).
    customized_config: used instead of config.json (config object, dict or JSON path). allow_pickle: permit
    `.bin` weights (unpickling; off by default).
    """
    _reject_unsupported(model_base, load_8bit, load_4bit, kwargs)
    checkpoint_dir = resolve_checkpoint(model_path, revision)
    raw = read_config(checkpoint_dir) if customized_config is None else customized_raw_config(customized_config)
    tokenizer, model, processor = load_from_dir(
        checkpoint_dir, raw, {"": device} if device is not None else device_map, torch_dtype, attn_implementation,
        compression, newline, zip_requested(model_name), overwrite_config, allow_pickle,
    )
    return tokenizer, model, processor, context_length(model.config)


def _stop_ids(tokenizer: PreTrainedTokenizerBase, config: ModelConfig) -> list[int]:
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
