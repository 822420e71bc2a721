"""The compression config and result types, validated on construction.

Why a dataclass with checks instead of a dict: a wrong value in a compression study yields plausible numbers
with no error, so every field is checked here, once, with the field's name and the allowed values.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch

Method = Literal["scc", "random", "uniform", "l2norm", "none"]
METHODS: tuple[str, ...] = ("scc", "random", "uniform", "l2norm", "none")
Precision = Literal["float32", "input"]
PRECISIONS: tuple[str, ...] = ("float32", "input")


@dataclass(frozen=True)
class CompressionConfig:
    """How many visual tokens survive, and how they are chosen.

    method: "scc" (LLaVA-Scissor), "random" / "uniform" / "l2norm" (the paper's ablation selectors, Table 4b,
        followed by the same merge step) or "none" (features pass through).
    tau: SCC similarity threshold in [-1, 1] (paper mode: the token count varies per video). SCC only.
    retention_ratio: keep exactly K = max(1, round(r * F * T)) tokens, r in (0, 1].
    epsilon: the paper's approximate components (sample min(N, ceil(ln N / eps^2)) nodes); None = exact.
    seed: seeds the `random` selector and the approximate-components sampling.
    precision: "float32" (default) computes norms, similarities, the `> tau` test, means and the merge in
        float32 whatever the input dtype, so fp16/bf16 rounding does not decide near-threshold edges.
        "input" computes them in the features' own dtype, as the authors' code does: on fp16 features tau is
        rounded to fp16 when compared (tau 0.9 becomes an effective cut of fp16(0.9) + 2^-12 = 0.90015) and
        similarities are quantised to 2^-11 near 1; on bf16 features to 2^-8 near 1 (a much coarser cut than
        the authors' fp16 runs); on float32 features it equals "float32"; float64 features compute in float64.
        Means are accumulated in float32 and rounded once (as fp16 `torch.mean` does); the merge accumulates
        in the input dtype.
    """

    method: Method = "scc"
    tau: float | None = None
    retention_ratio: float | None = None
    epsilon: float | None = None
    seed: int = 0
    precision: Precision = "float32"

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"compression.method must be one of {list(METHODS)}, got {self.method!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"compression.precision must be one of {list(PRECISIONS)}, got {self.precision!r}")
        _check_number("tau", self.tau, -1.0, 1.0, low_open=False)
        _check_number("retention_ratio", self.retention_ratio, 0.0, 1.0, low_open=True)
        _check_number("epsilon", self.epsilon, 0.0, 1.0, low_open=True)
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise TypeError(f"compression.seed must be an int, got {self.seed!r}")
        has_tau, has_ratio = self.tau is not None, self.retention_ratio is not None
        if self.method == "none":
            if has_tau or has_ratio:
                raise ValueError("compression.method 'none' keeps every token: leave tau and retention_ratio unset")
        elif self.method == "scc":
            if has_tau == has_ratio:
                raise ValueError(
                    "compression.method 'scc' needs exactly one of tau (paper mode) or retention_ratio (exact "
                    f"budget); got tau={self.tau!r}, retention_ratio={self.retention_ratio!r}"
                )
        else:
            if has_tau or not has_ratio:
                raise ValueError(
                    f"compression.method {self.method!r} is a fixed-budget selector: set retention_ratio "
                    f"(and not tau); got tau={self.tau!r}, retention_ratio={self.retention_ratio!r}"
                )
        if self.epsilon is not None and self.tau is None:
            raise ValueError(
                "compression.epsilon (approximate components) applies to SCC's tau mode only: set tau, or leave "
                f"epsilon unset; got method={self.method!r}, retention_ratio={self.retention_ratio!r}"
            )

    def target_tokens(self, num_tokens: int) -> int | None:
        """K for ratio mode: max(1, round(r * N)) (Python's round, as the spec reads); None in tau mode."""
        if self.retention_ratio is None:
            return None
        return max(1, round(self.retention_ratio * num_tokens))


def _check_number(name: str, value: float | None, low: float, high: float, low_open: bool) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"compression.{name} must be a number, got {value!r}")
    lower_ok = value > low if low_open else value >= low
    if not (math.isfinite(value) and lower_ok and value <= high):
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}]"
        raise ValueError(f"compression.{name} must be in {interval}, got {value!r}")


@dataclass
class CompressionStats:
    """What compression did, for reports: counts, the thresholds in effect, and wall time."""

    method: str
    tokens_in: int
    tokens_spatial: int | None  # after the SCC spatial step; None for selectors
    tokens_out: int
    tau_spatial: float | None  # threshold used by the spatial step (searched in ratio mode)
    tau_temporal: float | None  # threshold in effect in the temporal step (searched in ratio mode)
    time_ms: float

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
