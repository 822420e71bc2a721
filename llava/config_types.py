"""Torch-free configuration types: the fixed choices a user types (flags, YAML keys, lmms-eval model_args) and the
validated compression config.

They sit at the bottom of the import graph (standard library only) so a front end can parse and validate a whole
run config before torch loads: `llava-infer --help`, or a bad flag, answers in well under a second instead of
after torch's and transformers' import time. `llava.compression` re-exports the compression names and
`llava.run_config` builds its sections from these types, so each choice list and each default is defined here once.
"""
from __future__ import annotations

import math
import typing
from dataclasses import dataclass
from typing import Literal

Method = Literal["scc", "random", "uniform", "l2norm", "pllava", "visionzip", "dycoke", "evs", "vidcom2", "fastv",
                 "none"]
Budget = Literal["tau_or_ratio", "ratio", "none"]
Need = Literal["grid", "tower_attention"]
Stage = Literal["pre_llm", "in_llm"]
FASTV_LAYER = 3  # FastV's K in the LLaVA-Scissor tables (FastV's KV-cache variant uses it too)
DYCOKE_LAYER = 3  # DyCoke's L, its official default: layers L and up prune the video KV cache while decoding


@dataclass(frozen=True)
class MethodSpec:
    """What one compression method takes and needs, declared once: the config validates against it, the command
    line lists it, and the model computes an extra input only when the method in use needs it.

    budget: "tau_or_ratio" = exactly one of tau / retention_ratio (SCC); "ratio" = retention_ratio, or one of
        `budget_knobs` instead (a method whose own knob fixes the count); "none" = neither (every token kept).
    knobs: the CompressionConfig fields that belong to this method only; setting another method's knob fails.
    needs: inputs beyond the pooled features [F, T, D]: "grid" = the projector output before pooling [F, P, D];
        "tower_attention" = the tower's last used layer's attention received per pooled token [F, T] and its
        keys [F, T, Dk], pooled to the token grid as the features are.
    merges: True when every input token ends up in a kept token; False when unkept tokens are dropped.
    stage: "pre_llm" = the method reduces the visual block before the LLM; "in_llm" = every video token enters
        the LLM and the method prunes inside it (the features pass through `compress` unchanged, and a server
        that only sees the LLM's inputs cannot run it).
    """

    summary: str
    budget: Budget = "ratio"
    knobs: tuple[str, ...] = ()
    budget_knobs: tuple[str, ...] = ()
    needs: tuple[Need, ...] = ()
    merges: bool = True
    stage: Stage = "pre_llm"


METHOD_SPECS: dict[str, MethodSpec] = {
    "scc": MethodSpec("LLaVA-Scissor: semantic connected components, spatial then temporal, then merge",
                      budget="tau_or_ratio", knobs=("epsilon",)),
    "random": MethodSpec("random kept tokens, every token merged into its most similar kept one (Table 4b)"),
    "uniform": MethodSpec("uniformly strided kept tokens, then the same merge (Table 4b)"),
    "l2norm": MethodSpec("the tokens of largest L2 norm, then the same merge (Table 4b)"),
    "pllava": MethodSpec("PLLaVA: adaptive 3-D average pooling of the unpooled projector grid to (T', H', W')",
                         knobs=("pool_shape",), budget_knobs=("pool_shape",), needs=("grid",)),
    "visionzip": MethodSpec("VisionZip (LLaVA-OneVision port): per frame, dominant tokens by tower attention, then "
                            "contextual tokens merged by key similarity, 54:10", needs=("tower_attention",)),
    "dycoke": MethodSpec("DyCoke: stage 1 (temporal token merging): in pairs, then groups of four frames, a later "
                         "frame keeps only its tokens least like the earlier one; with dycoke_p, stage 2: while "
                         "decoding, layers L and up attend to the video tokens layer L-1 attends to most",
                         knobs=("dycoke_k", "dycoke_l", "dycoke_p"), budget_knobs=("dycoke_k",), merges=False),
    "evs": MethodSpec("EVS (as vLLM ships it): the tokens most changed since the previous frame, first frame first",
                      merges=False),
    "vidcom2": MethodSpec("VidCom2 (as vLLM ships it): per-frame shares by frame distinctiveness, then the tokens "
                          "least like their video and frame", merges=False),
    "fastv": MethodSpec("FastV (KV-cache variant): every video token enters the LLM; at layer K the video tokens "
                        "the last prompt token attends to least at layer K-1 are dropped from the hidden states "
                        "and from the KV cache of layers K and up", knobs=("fastv_layer",), merges=False,
                        stage="in_llm"),
    "none": MethodSpec("every token kept", budget="none"),
}
METHODS: tuple[str, ...] = tuple(METHOD_SPECS)
assert METHODS == typing.get_args(Method), "Method must list METHOD_SPECS' names"
KNOB_FIELDS: tuple[str, ...] = tuple(dict.fromkeys(k for spec in METHOD_SPECS.values() for k in spec.knobs))
Precision = Literal["float32", "input"]
PRECISIONS: tuple[str, ...] = typing.get_args(Precision)
NewlinePolicy = Literal["auto", "one_token", "frame", "none"]
NEWLINE_POLICIES: tuple[str, ...] = typing.get_args(NewlinePolicy)
DtypeName = Literal["auto", "float32", "bfloat16", "float16"]  # "auto": bf16 on CUDA / native-bf16 CPUs, else fp32
DTYPE_NAMES: tuple[str, ...] = typing.get_args(DtypeName)
AttentionName = Literal["auto", "sdpa", "eager", "flash_attention_2"]  # "auto": flash-attn where it runs, else sdpa
ATTENTION_NAMES: tuple[str, ...] = typing.get_args(AttentionName)
FRAME_BATCH_SIZE = 16  # frames per vision-tower batch: bounds the tower's activation memory on long videos


@dataclass(frozen=True)
class CompressionConfig:
    """How many visual tokens survive, and how they are chosen.

    A dataclass with checks instead of a dict because a wrong value in a compression study yields plausible
    numbers with no error: every field is checked here, once, with the field's name and the allowed values.

    method: "scc" (LLaVA-Scissor), "random" / "uniform" / "l2norm" (the paper's ablation selectors, Table 4b,
        followed by the same merge step), a baseline of the paper's tables ("pllava", "visionzip", "dycoke";
        "fastv", which prunes inside the LLM), vLLM's video pruning ("evs", "vidcom2") or "none" (features pass
        through); `METHOD_SPECS` says what each takes and needs.
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
    pool_shape: PLLaVA's output shape (frames, rows, columns) of the 3-D pooling of the unpooled grid; fixes the
        count at T' * H' * W' instead of retention_ratio. PLLaVA only.
    dycoke_k: DyCoke's merging knob k in (0, 1]: each frame it prunes keeps int((1 - k) * T) tokens; fixes the
        count instead of retention_ratio (which picks the k whose count is nearest K). DyCoke only.
    dycoke_p: DyCoke's stage 2 (decode-time KV pruning) and its rate P in (0, 1]: at a decode step whose layer
        L-1 attention over the video differs from the previous step's, layers L and up attend to only
        int(N * (1 - P)) of the N video tokens. None (default) = stage 1 only. DyCoke only.
    dycoke_l: DyCoke's L >= 1 for stage 2 (default 3 when dycoke_p is set; it needs dycoke_p); must also be
        below the LLM's layer count, checked when the model runs. DyCoke only.
    fastv_layer: FastV's K >= 1 (default 3 when the method is fastv): layers below K see every video token,
        layers K and up see round(retention_ratio * N) of the N video tokens. It must also be below the LLM's
        layer count, which only the model knows: checked when the model runs. FastV only.
    """

    method: Method = "scc"
    tau: float | None = None
    retention_ratio: float | None = None
    epsilon: float | None = None
    seed: int = 0
    precision: Precision = "float32"
    pool_shape: tuple[int, int, int] | None = None
    dycoke_k: float | None = None
    dycoke_l: int | None = None
    dycoke_p: float | None = None
    fastv_layer: int | None = None

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"compression.method must be one of {list(METHODS)}, got {self.method!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"compression.precision must be one of {list(PRECISIONS)}, got {self.precision!r}")
        _check_number("tau", self.tau, -1.0, 1.0, low_open=False)
        _check_number("retention_ratio", self.retention_ratio, 0.0, 1.0, low_open=True)
        _check_number("epsilon", self.epsilon, 0.0, 1.0, low_open=True)
        _check_number("dycoke_k", self.dycoke_k, 0.0, 1.0, low_open=True)
        _check_number("dycoke_p", self.dycoke_p, 0.0, 1.0, low_open=True)
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise TypeError(f"compression.seed must be an int, got {self.seed!r}")
        self._check_pool_shape()
        self._check_fastv_layer()
        self._check_knobs()
        self._check_dycoke_layer()
        self._check_budget()

    def _check_pool_shape(self) -> None:
        """pool_shape: 3 positive ints, stored as a tuple (YAML and the flags give lists; a tuple keeps the config
        hashable, and the config is a cache key). Whether it fits the video is checked at compress time."""
        if self.pool_shape is None:
            return
        shape = self.pool_shape
        if (not isinstance(shape, (tuple, list)) or len(shape) != 3
                or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in shape)):
            raise ValueError(f"compression.pool_shape must be 3 positive ints (frames, rows, columns), e.g. "
                             f"[16, 8, 8]; got {shape!r}")
        object.__setattr__(self, "pool_shape", tuple(shape))

    def _check_fastv_layer(self) -> None:
        """fastv_layer: an int >= 1, set to FASTV_LAYER for method fastv when left out (so equal runs compare and
        hash equal); the upper bound (the LLM's layer count) is checked by the model."""
        if self.method == "fastv" and self.fastv_layer is None:
            object.__setattr__(self, "fastv_layer", FASTV_LAYER)
        k = self.fastv_layer
        if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
            raise ValueError(f"compression.fastv_layer must be an int in [1, number of LLM layers - 1], got {k!r}")

    def _check_dycoke_layer(self) -> None:
        """dycoke_l: an int >= 1, only with dycoke_p (it is stage 2's layer), set to DYCOKE_LAYER when dycoke_p is
        set and it is left out (so equal runs compare and hash equal); the upper bound is checked by the model."""
        if self.dycoke_l is not None and self.dycoke_p is None:
            raise ValueError(f"compression.dycoke_l is the layer of DyCoke's stage 2, which dycoke_p turns on: set "
                             f"dycoke_p in (0, 1] too, or leave dycoke_l unset; got dycoke_l={self.dycoke_l!r}")
        if self.method == "dycoke" and self.dycoke_p is not None and self.dycoke_l is None:
            object.__setattr__(self, "dycoke_l", DYCOKE_LAYER)
        layer = self.dycoke_l
        if layer is not None and (isinstance(layer, bool) or not isinstance(layer, int) or layer < 1):
            raise ValueError(f"compression.dycoke_l must be an int in [1, number of LLM layers - 1], got {layer!r}")

    @property
    def prunes_in_llm(self) -> bool:
        """True when the LLM itself runs part of the method (our own prefill / decode loop): an in-LLM method
        (`MethodSpec.stage`, FastV), or DyCoke with its decode stage on (dycoke_p set)."""
        return METHOD_SPECS[self.method].stage == "in_llm" or self.dycoke_p is not None

    def _check_knobs(self) -> None:
        spec = METHOD_SPECS[self.method]
        for knob in KNOB_FIELDS:
            if getattr(self, knob) is not None and knob not in spec.knobs:
                owners = [name for name, other in METHOD_SPECS.items() if knob in other.knobs]
                raise ValueError(
                    f"compression.{knob} is a knob of method {' / '.join(map(repr, owners))}, not of "
                    f"{self.method!r}; {self.method!r} takes {list(spec.knobs) if spec.knobs else 'no knobs'}"
                )
        if self.epsilon is not None and self.tau is None:
            raise ValueError(
                "compression.epsilon (approximate components) applies to SCC's tau mode only: set tau, or leave "
                f"epsilon unset; got method={self.method!r}, retention_ratio={self.retention_ratio!r}"
            )

    def _check_budget(self) -> None:
        spec = METHOD_SPECS[self.method]
        has_tau, has_ratio = self.tau is not None, self.retention_ratio is not None
        knob_budget = [k for k in spec.budget_knobs if getattr(self, k) is not None]
        if spec.budget == "none":
            if has_tau or has_ratio:
                raise ValueError(f"compression.method {self.method!r} keeps every token: leave tau and "
                                 "retention_ratio unset")
        elif spec.budget == "tau_or_ratio":
            if has_tau == has_ratio:
                raise ValueError(
                    f"compression.method {self.method!r} needs exactly one of tau (paper mode) or retention_ratio "
                    f"(exact budget); got tau={self.tau!r}, retention_ratio={self.retention_ratio!r}"
                )
        elif has_tau or has_ratio + len(knob_budget) != 1:
            alternatives = " or ".join(["retention_ratio", *spec.budget_knobs])
            raise ValueError(
                f"compression.method {self.method!r} is a fixed-budget method: set {alternatives} (exactly one; "
                "tau is SCC's paper mode); got "
                f"tau={self.tau!r}, retention_ratio={self.retention_ratio!r}"
                + "".join(f", {k}={getattr(self, k)!r}" for k in spec.budget_knobs)
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
