"""The form's values -> a validated `DemoRequest`, or a `DemoInputError` whose message names the field and the fix.

Every rule comes from the config types themselves: the frame count is checked by the run config's `VideoSection`,
each budget by `CompressionConfig` (a ratio outside (0, 1], a tau given to a method that takes none, a missing
budget), so the page shows the same words the command line and the YAML loader use. Torch-free, so the form can be
checked before anything heavy runs.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from llava.config_types import METHOD_SPECS, METHODS, CompressionConfig
from llava.run_config import RunConfig

RATIO, TAU = "retention ratio", "tau"
BUDGET_KINDS = (RATIO, TAU)  # the two ways a CompressionConfig states its budget


class DemoInputError(ValueError):
    """A value in the form cannot be run; the message names the field and what to change."""


@dataclass(frozen=True)
class Setting:
    """One column of the comparison: a label ("A", "B") and the compression it runs."""

    label: str
    compression: CompressionConfig


@dataclass(frozen=True)
class DemoRequest:
    """One press of Run: a video file, the run config with this request's frame count, the settings to compare
    (each compresses the same pooled features) and the questions (each setting answers all of them)."""

    video: Path
    config: RunConfig
    settings: tuple[Setting, ...]
    questions: tuple[str, ...]


def parse_questions(text: str | None) -> list[str]:
    """One question per line; blank lines are skipped. At least one is required."""
    questions = [line.strip() for line in (text or "").splitlines() if line.strip()]
    if not questions:
        raise DemoInputError("Questions: type at least one question (one per line)")
    return questions


def with_frames(config: RunConfig, frames: float | int | None) -> RunConfig:
    """The run config with `video.frames` set; the range check is VideoSection's own."""
    if isinstance(frames, float) and frames.is_integer():
        frames = int(frames)  # a number box may hand over 8.0
    try:
        return dataclasses.replace(config, video=dataclasses.replace(config.video, frames=frames))
    except (ValueError, TypeError) as err:
        raise DemoInputError(f"Frames: {err}") from err


def build_compression(label: str, base: CompressionConfig, method: str, kind: str,
                      value: float | None) -> CompressionConfig:
    """A setting's CompressionConfig: `method` with `value` as its retention ratio or tau (ignored for a method
    that keeps every token); seed and precision come from `base`, the config the app was started with."""
    if method not in METHODS:
        raise DemoInputError(f"Setting {label}: method must be one of {list(METHODS)}, got {method!r}")
    if kind not in BUDGET_KINDS:
        raise DemoInputError(f"Setting {label}: budget must be one of {list(BUDGET_KINDS)}, got {kind!r}")
    takes_budget = METHOD_SPECS[method].budget != "none"
    tau = value if takes_budget and kind == TAU else None
    ratio = value if takes_budget and kind == RATIO else None
    try:
        return CompressionConfig(method=method, tau=tau, retention_ratio=ratio, seed=base.seed,
                                 precision=base.precision)
    except (ValueError, TypeError) as err:
        raise DemoInputError(f"Setting {label}: {err}") from err


def check_video(path: str | Path | None) -> Path:
    """The uploaded file must exist and hold bytes; whether it decodes is the decoder's call (run time)."""
    if path is None or str(path) == "":
        raise DemoInputError("Video: upload a video file, or press 'Use the demo clip'")
    path = Path(path)
    if not path.is_file():
        raise DemoInputError(f"Video: {path.name} is not a file on the server; upload it again")
    if path.stat().st_size == 0:
        raise DemoInputError(f"Video: {path.name} is empty (0 bytes); upload a video file")
    return path


def parse_request(config: RunConfig, base: CompressionConfig, video: str | Path | None, frames: float | int | None,
                  questions: str | None, settings: list[tuple[str, str, str, float | None]]) -> DemoRequest:
    """The whole form -> a DemoRequest. settings: (label, method, budget kind, value) per column compared."""
    if not settings:
        raise DemoInputError("Settings: give at least one compression setting")
    built = tuple(Setting(label, build_compression(label, base, method, kind, value))
                  for label, method, kind, value in settings)
    return DemoRequest(check_video(video), with_frames(config, frames), built, tuple(parse_questions(questions)))
