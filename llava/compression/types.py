"""The compression config (defined torch-free in `llava.config_types`, re-exported here) and the result types.

The config lives below torch so the command line can validate it before torch loads; everything in this package
reads it from here.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from llava.config_types import METHOD_SPECS, METHODS, PRECISIONS, CompressionConfig, Method, MethodSpec, Precision

__all__ = ["METHODS", "METHOD_SPECS", "PRECISIONS", "CompressionConfig", "CompressionResult", "CompressionStats",
           "Method", "MethodSpec", "Precision", "VisualExtras"]

NEED_FIELDS = {"grid": ("grid",), "tower_attention": ("attention", "keys")}


@dataclass
class VisualExtras:
    """Inputs beyond the pooled features [F, T, D] that some methods need (`MethodSpec.needs`); the model computes
    a field only when the method in use asks for it, so the default path pays for none of them.

    grid [F, P, D]: the projector output before pooling (P = 27 x 27 = 729 for SigLIP at 384 px).
    attention [F, T]: attention the tower's last used layer gives each pooled token (mean over heads, then over
        query rows, pooled to the token grid like the features). keys [F, T, Dk]: that layer's keys, mean over
        heads, pooled the same way.
    """

    grid: torch.Tensor | None = None
    attention: torch.Tensor | None = None
    keys: torch.Tensor | None = None

    def require(self, method: str, spec: MethodSpec) -> None:
        """Raise naming what `method` needs and is missing."""
        missing = [f for need in spec.needs for f in NEED_FIELDS[need] if getattr(self, f) is None]
        if missing:
            raise ValueError(
                f"compression method {method!r} needs {spec.needs} (VisualExtras fields {missing} are missing); "
                "the model computes them when the method asks: use model.encode_video / compress_features, or "
                "pass extras= to compress"
            )

    def split(self, frame_counts: list[int]) -> list[VisualExtras]:
        """Per-video extras of a frame stream that held several videos (`frame_counts` frames each, in order)."""
        parts = {f: None if getattr(self, f) is None else getattr(self, f).split(frame_counts)
                 for f in ("grid", "attention", "keys")}
        return [VisualExtras(**{f: None if chunks is None else chunks[i] for f, chunks in parts.items()})
                for i in range(len(frame_counts))]


@dataclass
class CompressionStats:
    """What compression did, for reports: counts, the thresholds in effect, and wall time (None unless
    `compress(..., timed=True)`: timing must synchronise the device, which the default path never does)."""

    method: str
    tokens_in: int
    tokens_spatial: int | None  # after the SCC spatial step; None for selectors
    tokens_out: int
    tau_spatial: float | None  # threshold used by the spatial step (searched in ratio mode)
    tau_temporal: float | None  # threshold in effect in the temporal step (searched in ratio mode)
    time_ms: float | None
    pool_shape: tuple[int, int, int] | None = None  # pllava: the (T', H', W') pooled to (the count is their product)

    @property
    def retention(self) -> float:
        return self.tokens_out / self.tokens_in


@dataclass
class CompressionResult:
    """tokens [K, D] (input dtype and device); assignment [F, T]: index in [0, K) of the token each input
    token was merged into (for pictures and analysis)."""

    tokens: torch.Tensor
    assignment: torch.Tensor
    stats: CompressionStats = field(repr=False)
