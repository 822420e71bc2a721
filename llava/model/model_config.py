"""Our model config, parsed once from either checkpoint format's config.json, and the two policies read from it.

Keys read: the original LLaVA-NeXT format's flat Qwen2 fields plus `mm_*` keys (lmms-lab checkpoints), the llava-hf
format's `text_config` / `vision_config`, the newline layout (`mm_patch_merge_type`, `mm_newline_position`), and
LLaVA-Scissor's `mm_use_zip` / `mm_zip_tau` / `mm_zip_epsilon`. Every checkpoint key is read here and nowhere
else, so the rest of `llava.model` works on typed fields instead of `getattr(config, "x", default)`.

Our extension: an original-format config.json may carry a `vision_config` dict (SiglipVisionConfig fields). Real
checkpoints do not: LLaVA-NeXT hard-codes SigLIP so400m-patch14-384 minus its last layer, which we use when the
key is absent. Tiny test checkpoints need it to declare their small tower. A second key of ours,
`mm_zip_precision` ("float32" or "input"), sets the arithmetic of the checkpoint's own compression.

Drop-in names: lmms-eval's `llava_onevision` class assigns `config.mm_spatial_pool_stride` / `_mode` before every
video and `config.image_aspect_ratio` before frame lists; these are validated properties / fields here, read by
the model at its next call. Importing this module registers LLaVA-NeXT's `llava_qwen` and LLaVA-Scissor's
`llava_qwen_zip` model types with transformers' AutoConfig, as their packages do on import, because lmms-eval
calls `AutoConfig.from_pretrained` on the checkpoint.
"""
from __future__ import annotations

import logging
import typing
from dataclasses import dataclass
from typing import Any, Literal

from transformers import AutoConfig, Qwen2Config, SiglipVisionConfig

from llava.config_types import (
    PRECISIONS,
    CompressionConfig,
    NewlinePolicy,
    Precision,
)

logger = logging.getLogger(__name__)

CheckpointFormat = Literal["original", "hf"]
NewlinePosition = Literal["one_token", "frame", "none"]
PoolMode = Literal["bilinear", "average", "max"]
POOL_MODES: tuple[str, ...] = typing.get_args(PoolMode)

ORIGINAL_MODEL_TYPES = ("llava", "llava_qwen", "llava_qwen_zip")
ORIGINAL_ARCHITECTURES = ("LlavaQwenForCausalLM", "LlavaQwenZipForCausalLM")
HF_MODEL_TYPE = "llava_onevision"
REQUIRED_VISION_KEYS = ("mm_vision_tower", "mm_projector_type", "mm_hidden_size")

# SigLIP so400m-patch14-384 with its last encoder layer removed (26 of 27), no head: LLaVA-NeXT's fixed tower.
SO400M_VISION = dict(
    hidden_size=1152, intermediate_size=4304, num_hidden_layers=26, num_attention_heads=16, image_size=384,
    patch_size=14, hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6, vision_use_head=False,
)

# Qwen2 fields read from the top level of an original-format config.json (it is a flat Qwen2 config + mm_* keys).
TEXT_KEYS = (
    "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "hidden_act", "max_position_embeddings", "rms_norm_eps", "rope_theta", "rope_scaling",
    "rope_parameters", "tie_word_embeddings", "use_sliding_window", "sliding_window", "max_window_layers",
    "attention_dropout", "bos_token_id", "eos_token_id", "layer_types", "initializer_range",
)

# LLaVA-Scissor's code falls back to tau 0.95 and epsilon 0.05 when config.json lacks `mm_zip_tau` /
# `mm_zip_epsilon`; we use the same fallbacks. (Its README says the released checkpoints' config.json carries
# tau 0.9 and epsilon 0.05; those values come from the file, not from these fallbacks.)
SCISSOR_DEFAULT_TAU = 0.95
SCISSOR_DEFAULT_EPSILON = 0.05
# The checkpoint's own compression runs in the features' dtype, as LLaVA-Scissor computed it (fp16 in its runs),
# unless config.json's `mm_zip_precision` says "float32". An explicit CompressionConfig keeps its own default.
SCISSOR_DEFAULT_PRECISION: Precision = "input"
DEFAULT_POOL_STRIDE = 2  # LLaVA-NeXT's get_2dPool default: 27x27 -> 14x14 bilinear

# llava-hf pads the vocabulary (+2 tokens, to a multiple of 64); the Qwen vocabularies before padding are
# multiples of 128 (151936 for 0.5B, 152064 for 7B). See `unpadded_vocab_size`.
HF_PAD_MULTIPLE = 64
QWEN_VOCAB_MULTIPLE = 128
HF_ADDED_TOKENS = 2


@dataclass
class ModelConfig:
    """Everything the model needs from a checkpoint's config.json, in one typed place."""

    text: Qwen2Config
    vision: SiglipVisionConfig
    source_format: CheckpointFormat
    projector_type: str = "mlp2x_gelu"
    pool_mode: PoolMode = "bilinear"
    pool_stride: int = DEFAULT_POOL_STRIDE
    image_aspect_ratio: str | None = None  # LLaVA-NeXT's image path setting; `process_images` reads it
    has_image_newline: bool = True
    newline_position: NewlinePosition = "one_token"
    use_zip: bool | str | None = None  # config.json's `mm_use_zip` as written (validated); see `zip_enabled`
    zip_tau: float | None = None
    zip_epsilon: float | None = None
    zip_precision: Precision | None = None
    padded_vocab_size: int | None = None  # hf only: rows on disk before `unpadded_vocab_size`
    max_sequence_length: int | None = None
    tokenizer_model_max_length: int | None = None

    @property
    def tie_word_embeddings(self) -> bool:
        return bool(self.text.tie_word_embeddings)

    @property
    def mm_spatial_pool_stride(self) -> int:
        """LLaVA-NeXT's name for `pool_stride`; assigning it takes effect at the model's next call."""
        return self.pool_stride

    @mm_spatial_pool_stride.setter
    def mm_spatial_pool_stride(self, value: int) -> None:
        self.pool_stride = check_pool_stride(value)

    @property
    def mm_spatial_pool_mode(self) -> str:
        """LLaVA-NeXT's name for `pool_mode`; assigning it takes effect at the model's next call."""
        return self.pool_mode

    @mm_spatial_pool_mode.setter
    def mm_spatial_pool_mode(self, value: str) -> None:
        self.pool_mode = check_pool_mode(value)


class LlavaQwenConfig(Qwen2Config):
    """LLaVA-NeXT's model type for Qwen-based checkpoints, registered so `AutoConfig.from_pretrained` reads them."""

    model_type = "llava_qwen"


class LlavaQwenZipConfig(Qwen2Config):
    """LLaVA-Scissor's model type, registered for the same reason."""

    model_type = "llava_qwen_zip"


for _config_class in (LlavaQwenConfig, LlavaQwenZipConfig):
    AutoConfig.register(_config_class.model_type, _config_class, exist_ok=True)


def check_pool_stride(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"mm_spatial_pool_stride must be a positive int (2 gives 14x14 from 27x27), got {value!r}")
    return value


def check_pool_mode(value: Any) -> PoolMode:
    if value not in POOL_MODES:
        raise ValueError(f"mm_spatial_pool_mode must be one of {list(POOL_MODES)}, got {value!r}")
    return value


def detect_format(raw: dict[str, Any]) -> CheckpointFormat:
    """Tell the two formats apart by config content (never by path or name)."""
    model_type = raw.get("model_type")
    if model_type == HF_MODEL_TYPE:
        return "hf"
    architectures = raw.get("architectures") or []
    if model_type in ORIGINAL_MODEL_TYPES or any(a in ORIGINAL_ARCHITECTURES for a in architectures):
        missing = [k for k in REQUIRED_VISION_KEYS if k not in raw]
        if missing:
            raise ValueError(
                f"config.json looks like a LLaVA-NeXT checkpoint (model_type={model_type!r}) but lacks the vision "
                f"keys {missing}; it is probably a text-only Qwen2 config. Point model_path at a LLaVA-OneVision "
                "checkpoint (e.g. lmms-lab/llava-onevision-qwen2-0.5b-ov)."
            )
        return "original"
    raise ValueError(
        f"config.json has model_type={model_type!r}, architectures={architectures!r}: not a LLaVA-OneVision "
        f"checkpoint. Supported: model_type {HF_MODEL_TYPE!r} (llava-hf) or {list(ORIGINAL_MODEL_TYPES)} / "
        f"architectures {list(ORIGINAL_ARCHITECTURES)} with {list(REQUIRED_VISION_KEYS)} (LLaVA-NeXT)."
    )


def parse_bool(name: str, value: Any) -> bool:
    """Booleans that LLaVA-Scissor may store as strings ("false"/"true"); "false" really means off here."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    if value is None:
        return False
    raise ValueError(f"config key {name} must be a bool or 'true'/'false', got {value!r}")


def parse_model_config(raw: dict[str, Any]) -> ModelConfig:
    """config.json content -> ModelConfig, for either format."""
    fmt = detect_format(raw)
    config = _parse_original(raw) if fmt == "original" else _parse_hf(raw)
    if config.projector_type != "mlp2x_gelu":
        raise ValueError(f"mm_projector_type {config.projector_type!r} is not supported; only 'mlp2x_gelu' is")
    return config


def _zip_fields(raw: dict[str, Any]) -> dict[str, Any]:
    """LLaVA-Scissor's keys (and our `mm_zip_precision`), validated; `mm_use_zip` is kept as written."""
    use_zip = raw.get("mm_use_zip")
    parse_bool("mm_use_zip", use_zip)
    precision = raw.get("mm_zip_precision")
    if precision is not None and precision not in PRECISIONS:
        raise ValueError(f"config key mm_zip_precision must be one of {list(PRECISIONS)}, got {precision!r}")
    return dict(use_zip=use_zip, zip_tau=raw.get("mm_zip_tau"), zip_epsilon=raw.get("mm_zip_epsilon"),
                zip_precision=precision)


def _pool_fields(raw: dict[str, Any]) -> dict[str, Any]:
    """LLaVA-NeXT's pooling keys, read for both formats (lmms-eval passes them through `overwrite_config`)."""
    stride = raw.get("mm_spatial_pool_stride")
    return dict(
        pool_mode=check_pool_mode(raw.get("mm_spatial_pool_mode") or "bilinear"),
        pool_stride=DEFAULT_POOL_STRIDE if stride is None else check_pool_stride(stride),
    )


def _parse_original(raw: dict[str, Any]) -> ModelConfig:
    vision = SiglipVisionConfig(**{**SO400M_VISION, **raw.get("vision_config", {}), "vision_use_head": False})
    if raw["mm_hidden_size"] != vision.hidden_size:
        raise ValueError(
            f"mm_hidden_size={raw['mm_hidden_size']} but the vision tower has hidden_size={vision.hidden_size}; "
            "fix config.json (add a matching `vision_config` for non-so400m towers)"
        )
    text = Qwen2Config(**{k: raw[k] for k in TEXT_KEYS if k in raw})
    merge_type = raw.get("mm_patch_merge_type", "flat")
    has_newline = "unpad" in merge_type
    return ModelConfig(
        text=text,
        vision=vision,
        source_format="original",
        projector_type=raw["mm_projector_type"],
        image_aspect_ratio=raw.get("image_aspect_ratio"),
        has_image_newline=has_newline,
        newline_position=_original_newline(merge_type, raw.get("mm_newline_position", "one_token")),
        max_sequence_length=raw.get("max_sequence_length"),
        tokenizer_model_max_length=raw.get("tokenizer_model_max_length"),
        **_pool_fields(raw),
        **_zip_fields(raw),
    )


def _original_newline(merge_type: str, position: str) -> NewlinePosition:
    """LLaVA-NeXT's video newline: only `spatial*` merge types add one; `unpad` is what creates the parameter."""
    if not merge_type.startswith("spatial") or position == "no_token":
        return "none"
    if position == "one_token":
        return "one_token" if "unpad" in merge_type else "none"
    if position == "frame":
        return "frame"
    raise ValueError(f"mm_newline_position {position!r} is not supported for video; use one_token/frame/no_token")


def _parse_hf(raw: dict[str, Any]) -> ModelConfig:
    layer, strategy = raw.get("vision_feature_layer", -1), raw.get("vision_feature_select_strategy", "full")
    if layer != -1 or strategy != "full":
        raise ValueError(
            f"only vision_feature_layer=-1 and vision_feature_select_strategy='full' are supported (as in every "
            f"llava-onevision-*-hf checkpoint), got {layer!r} / {strategy!r}"
        )
    text_raw = {k: v for k, v in raw.get("text_config", {}).items() if k in TEXT_KEYS}
    text_raw.setdefault("tie_word_embeddings", raw.get("tie_word_embeddings", False))
    text = Qwen2Config(**text_raw)
    padded = text.vocab_size
    text.vocab_size = unpadded_vocab_size(padded)
    vision_raw = {k: v for k, v in raw.get("vision_config", {}).items() if k != "model_type"}
    has_newline = bool(raw.get("use_image_newline_parameter", True))
    return ModelConfig(
        text=text,
        vision=SiglipVisionConfig(**{**SO400M_VISION, **vision_raw, "vision_use_head": False}),
        source_format="hf",
        projector_type="mlp2x_gelu",
        image_aspect_ratio=raw.get("image_aspect_ratio"),
        has_image_newline=has_newline,
        newline_position="one_token" if has_newline else "none",
        padded_vocab_size=padded,
        **_pool_fields(raw),
        **_zip_fields(raw),
    )


def unpadded_vocab_size(padded: int) -> int:
    """The Qwen vocabulary behind a llava-hf padded one: 152000 -> 151936 (0.5B), 152128 -> 152064 (7B).

    llava-hf adds 2 tokens and pads to a multiple of 64; Qwen vocabularies are multiples of 128. We take the
    largest multiple of 128 that pads back to `padded`; a size that does not fit the rule is kept as is.
    """
    candidate = (padded - HF_ADDED_TOKENS) // QWEN_VOCAB_MULTIPLE * QWEN_VOCAB_MULTIPLE
    repadded = -(-(candidate + HF_ADDED_TOKENS) // HF_PAD_MULTIPLE) * HF_PAD_MULTIPLE
    if candidate > 0 and repadded == padded:
        return candidate
    logger.info("vocab size %d does not look llava-hf padded; keeping every row", padded)
    return padded


def resolve_newline(policy: NewlinePolicy, config: ModelConfig, compressing: bool) -> NewlinePosition:
    """Where `image_newline` goes for a video. "auto": the checkpoint's layout when not compressing, none when
    compressing (LLaVA-Scissor forces `flat`, and the paper's numbers were made so)."""
    if policy == "auto":
        return "none" if compressing else config.newline_position
    if policy not in ("one_token", "frame", "none"):
        raise ValueError(f"newline policy must be one of auto/one_token/frame/none, got {policy!r}")
    if policy != "none" and not config.has_image_newline:
        raise ValueError(
            f"newline policy {policy!r} needs an image_newline parameter, which this checkpoint does not have "
            "(mm_patch_merge_type without 'unpad'); use newline='none' or 'auto'"
        )
    if policy == "frame" and compressing:
        raise ValueError("newline policy 'frame' needs per-frame tokens; it cannot follow compression, use 'none'")
    return policy


def zip_enabled(config: ModelConfig, zip_requested: bool) -> bool:
    """Whether the checkpoint's own compression is on.

    With "zip" in model_name (LLaVA-Scissor's class), as its code reads `mm_use_zip`: any truthy value is on,
    the string "false" included; only a false value (JSON false) is off; an absent key is on, because the name
    asked for compression. Without it, our reading: on for true / "true", off for false / "false" / absent.
    """
    if zip_requested:
        return config.use_zip is None or bool(config.use_zip)
    return parse_bool("mm_use_zip", config.use_zip)


def resolve_compression(
    config: ModelConfig, run: CompressionConfig | None, zip_requested: bool = False
) -> CompressionConfig:
    """The compression in effect: the run's config wins; else the checkpoint's own (`zip_enabled`): SCC in tau mode
    with `mm_zip_tau` / `mm_zip_epsilon` (LLaVA-Scissor's fallbacks 0.95 / 0.05) in `mm_zip_precision` (default
    "input": the features' dtype, as LLaVA-Scissor computed it)."""
    if run is not None:
        return run
    if not zip_enabled(config, zip_requested):
        return CompressionConfig(method="none")
    tau = config.zip_tau
    if tau is None:
        logger.warning("mm_zip_tau absent from the checkpoint; using LLaVA-Scissor's default %s", SCISSOR_DEFAULT_TAU)
        tau = SCISSOR_DEFAULT_TAU
    epsilon = SCISSOR_DEFAULT_EPSILON if config.zip_epsilon is None else config.zip_epsilon
    precision = config.zip_precision or SCISSOR_DEFAULT_PRECISION
    return CompressionConfig(method="scc", tau=float(tau), epsilon=float(epsilon), precision=precision)
