"""The run config: one YAML file = one reproducible run (model, video, compression, generation).

YAML only feeds typed dataclasses, so an unknown key or a bad value fails loudly with the field's name and the
allowed values; each default lives in exactly one place (the dataclass field). Command-line flags override
fields by dotted name (`compression.retention_ratio=0.05`). Torch-free (the sections are built from
`llava.config_types`), so a front end validates a run config before it imports the model.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from llava.config_types import (
    FRAME_BATCH_SIZE,
    METHOD_SPECS,
    AttentionName,
    CompressionConfig,
    DtypeName,
    NewlinePolicy,
)
from llava.video import Backend

CONFIG_DIR = Path(__file__).resolve().parent / "configs"  # the shipped run configs (inside the package, wheels too)


@dataclass(frozen=True)
class ModelSection:
    """path: local directory or hub id. dtype auto = bf16 on CUDA and on CPUs with native bf16 matmuls
    (AVX512-BF16 / AMX), fp32 on other CPUs; the report says which ran. device auto = CUDA if present.
    newline: auto = the checkpoint's layout when not compressing (stock OneVision: one token after all frames),
    none when compressing (as the paper's numbers were made); or force one_token / frame / none.
    frame_batch_size: frames per vision-tower batch (peak memory grows with it, not with the video's length)."""

    path: str = "lmms-lab/llava-onevision-qwen2-0.5b-ov"
    dtype: DtypeName = "auto"
    device: str = "auto"
    attn_implementation: AttentionName = "auto"
    newline: NewlinePolicy = "auto"
    frame_batch_size: int = FRAME_BATCH_SIZE

    def __post_init__(self) -> None:
        _check_literals(self, "model")
        if not self.path:
            raise ValueError("model.path must name a checkpoint directory or hub id")
        if isinstance(self.frame_batch_size, bool) or not isinstance(self.frame_batch_size, int) or \
                self.frame_batch_size < 1:
            raise ValueError(f"model.frame_batch_size must be an int >= 1, got {self.frame_batch_size!r}")


@dataclass(frozen=True)
class VideoSection:
    """frames: uniformly sampled frames per video (32 as in lmms-eval and the paper's 32 x 196 tokens)."""

    frames: int = 32
    backend: Backend = "auto"

    def __post_init__(self) -> None:
        _check_literals(self, "video")
        if isinstance(self.frames, bool) or not isinstance(self.frames, int) or not 1 <= self.frames <= 1024:
            raise ValueError(f"video.frames must be an int in [1, 1024], got {self.frames!r}")


@dataclass(frozen=True)
class GenerationSection:
    """temperature 0 = greedy decoding (what benchmarks use)."""

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0

    def __post_init__(self) -> None:
        if isinstance(self.max_new_tokens, bool) or not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise ValueError(f"generation.max_new_tokens must be an int >= 1, got {self.max_new_tokens!r}")
        if not isinstance(self.temperature, (int, float)) or not 0.0 <= self.temperature <= 10.0:
            raise ValueError(f"generation.temperature must be in [0, 10], got {self.temperature!r}")
        if not isinstance(self.top_p, (int, float)) or not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"generation.top_p must be in (0, 1], got {self.top_p!r}")


@dataclass(frozen=True)
class RunConfig:
    """compression None = follow the checkpoint's own keys (mm_use_zip / mm_zip_tau / mm_zip_epsilon)."""

    model: ModelSection = field(default_factory=ModelSection)
    video: VideoSection = field(default_factory=VideoSection)
    compression: CompressionConfig | None = None
    generation: GenerationSection = field(default_factory=GenerationSection)


_SECTIONS: dict[str, type] = {
    "model": ModelSection,
    "video": VideoSection,
    "compression": CompressionConfig,
    "generation": GenerationSection,
}


def _check_literals(obj: Any, section: str) -> None:
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        allowed = typing.get_args(hints[f.name]) if typing.get_origin(hints[f.name]) is Literal else None
        if allowed and getattr(obj, f.name) not in allowed:
            raise ValueError(f"{section}.{f.name} must be one of {list(allowed)}, got {getattr(obj, f.name)!r}")


def _build(section: str, values: Any) -> Any:
    cls = _SECTIONS[section]
    if not isinstance(values, dict):
        raise ValueError(f"config section '{section}' must be a mapping, got {values!r}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in config section '{section}'; allowed: {sorted(known)}")
    return cls(**values)


def config_from_dict(data: dict[str, Any]) -> RunConfig:
    """Validate a nested mapping (as read from YAML) into a RunConfig."""
    if not isinstance(data, dict):
        raise ValueError(f"a run config must be a mapping of sections {sorted(_SECTIONS)}, got {data!r}")
    unknown = sorted(set(data) - set(_SECTIONS))
    if unknown:
        raise ValueError(f"unknown config section(s) {unknown}; allowed: {sorted(_SECTIONS)}")
    sections = {name: _build(name, values) for name, values in data.items() if values is not None}
    return RunConfig(**sections)


# the compression fields that set how many tokens survive: at most one may be set, so an override of one clears
# the others (a flag switches the budget mode instead of failing on two being set)
_KNOB_OWNERS = {k: name for name, spec in METHOD_SPECS.items() for k in spec.budget_knobs}
BUDGET_KEYS: tuple[str, ...] = ("tau", "retention_ratio", *_KNOB_OWNERS)


def _set_budget(target: dict[str, Any], key: str, value: Any) -> None:
    """Override one budget key of a compression section: clear the others; a tau or ratio on an uncompressed
    section means SCC, a method's own budget knob (`dycoke_k`, `pool_shape`) means that method."""
    for other in BUDGET_KEYS:
        target.pop(other, None)
    if value is not None and key in _KNOB_OWNERS:
        target["method"] = _KNOB_OWNERS[key]
    elif value is not None and target.get("method", "none") == "none":
        target["method"] = "scc"
    target[key] = value


def load_config(path: str | Path | None, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Read a YAML run config (None = all defaults) and apply dotted overrides such as
    {"compression.retention_ratio": 0.05}, in order. A budget override (`BUDGET_KEYS`) clears the section's other
    budget keys; a later `compression.method` override still decides the method."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"run config {path} does not exist; see configs/ for the shipped ones")
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"run config {path} must hold a mapping of sections, got {type(data).__name__}")
    for dotted, value in (overrides or {}).items():
        section, _, key = dotted.partition(".")
        if section not in _SECTIONS or not key:
            raise ValueError(f"override {dotted!r} must look like 'section.key' with section in {sorted(_SECTIONS)}")
        target = data.setdefault(section, {}) or {}
        data[section] = target
        if section == "compression" and key in BUDGET_KEYS:
            _set_budget(target, key, value)
        else:
            target[key] = value
    return config_from_dict(data)


def resolve_config_path(value: str | Path) -> Path:
    """A config as given if it exists, else a name under the package's configs/ (with or without .yaml), so
    `--config llava-ov-7b-scissor` (or lmms-eval's `config=`) works from any directory."""
    path = Path(value).expanduser()
    if path.is_file():
        return path
    for candidate in (CONFIG_DIR / str(value), CONFIG_DIR / f"{value}.yaml"):
        if candidate.is_file():
            return candidate
    return path  # load_config names it in its FileNotFoundError


def config_to_dict(config: RunConfig) -> dict[str, Any]:
    """The run config as plain data (for reports and results files)."""
    return dataclasses.asdict(config)
