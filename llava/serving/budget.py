"""Which compression a served video gets and how many tokens it has, from shapes, the method and the ratio alone.

vLLM writes a video's placeholder tokens into the prompt before the vision encoder runs, so the count must follow
from the frame count F, the tokens per frame T and the request, never from the pixels. A method is served when it
reduces the video before the language model, `CompressionConfig.target_tokens` gives its exact count,
K = max(1, round(r * F * T)), and it needs nothing but the pooled features (`unservable_reason` holds that rule).
Both the processor (placeholders) and the model (embeddings) take K from `VideoBudget.token_count`, so the two
sides cannot drift.

r = 1.0 (or no ratio at all) means no compression and LLaVA-OneVision's stock layout: every pooled token plus one
`image_newline`, F * T + 1, exactly what stock vLLM serves, whatever the method. A compressed block has no
newline, as `llava.model`'s "auto" newline policy.

vLLM's own flags `--video-pruning-rate q` / `--video-pruning-method {evs, vidcom2}` name the fraction pruned; they
become an engine default of method m at r = 1 - q (`pruning_defaults`). vLLM counts int(F * T * (1 - q)) with a
floor of one frame (EVS) or one token per frame (VidCom2); we count K as above for both the placeholders and the
embeddings, so the two rules can differ by one token (and below the floors), never between prompt and embeddings.

This module imports neither vLLM nor torch: it is tested in the package's own environment, and `serve.sh` checks
its flags with it in well under a second.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from llava.config_types import METHOD_SPECS, METHODS, CompressionConfig

METHOD_KEY = "method"  # the mm_processor_kwargs keys users set (engine default or per request)
RATIO_KEY = "retention_ratio"
TAU_KEY = "tau"
SERVING_KEYS = (METHOD_KEY, RATIO_KEY, TAU_KEY)  # ours, not the HF processor's
DEFAULT_METHOD = "scc"
UNCOMPRESSED = 1.0
PRUNING_METHODS = ("evs", "vidcom2")  # what vLLM's --video-pruning-method accepts (a closed choice in vLLM 0.32)
RATE_DECIMALS = 10  # 1 - q is rounded to this, so q = 0.9 serves what r = 0.1 does (1 - 0.9 = 0.09999999999999998)
NEEDS_REASON = {  # why vLLM's encoder path lacks each extra input a method may need
    "grid": "the unpooled projector grid, which vLLM's `_video_pixels_to_features` (tower, projector and pooling "
            "in one call) does not return",
    "tower_attention": "the vision tower's attention and keys, which vLLM's SigLIP tower (a fused attention "
                       "kernel) does not return",
}


def unservable_reason(method: str) -> str | None:
    """Why `method` cannot be served through vLLM, or None when it can: the one servability rule.

    Served: a method that reduces the video before the language model, with a ratio budget whose count is exactly
    `target_tokens` (fixed by shapes before the encoder runs) and no input beyond the pooled features [F, T, D],
    which is what vLLM's video path hands the model. A method with its own budget knob reaches, at a ratio, only
    the count nearest K that its knob allows, not K itself.
    """
    spec = METHOD_SPECS[method]
    if spec.stage == "in_llm":
        return "it prunes inside the language model (every video token enters it), and the plugin changes only " \
               "the video embeddings that vLLM hands the language model"
    if spec.budget == "none":
        return "it keeps every token, which is retention_ratio 1.0 (vLLM's stock layout) with any method"
    if spec.budget_knobs:
        return f"its count at a ratio is the nearest that its own knob ({', '.join(spec.budget_knobs)}) allows, " \
               "not exactly max(1, round(r * frames * tokens_per_frame)), and vLLM writes the video's placeholders " \
               "from that count before the encoder runs"
    if spec.needs:
        return "it needs " + "; and ".join(NEEDS_REASON[need] for need in spec.needs)
    return None


SERVABLE_METHODS: tuple[str, ...] = tuple(m for m in METHODS if unservable_reason(m) is None)


@dataclass(frozen=True)
class VideoBudget:
    """What one served video gets: a servable method at retention ratio r in (0, 1]; r = 1.0 is the stock layout.

    Checked on construction; errors name the mm_processor_kwargs key, the reason and the allowed values.
    """

    method: str = DEFAULT_METHOD
    ratio: float = UNCOMPRESSED

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"mm_processor_kwargs {METHOD_KEY!r} must be one of the served methods "
                             f"{list(SERVABLE_METHODS)}, got {self.method!r}")
        reason = unservable_reason(self.method)
        if reason is not None:
            raise ValueError(f"mm_processor_kwargs {METHOD_KEY!r} {self.method!r} cannot be served: {reason}. "
                             f"Served methods: {list(SERVABLE_METHODS)}")
        try:
            CompressionConfig(method=self.method, retention_ratio=self.ratio)  # type: ignore[arg-type]
        except (TypeError, ValueError) as err:
            raise ValueError(f"mm_processor_kwargs {RATIO_KEY!r}: {err}; use a number in (0, 1], e.g. 0.1") from err
        object.__setattr__(self, "ratio", float(self.ratio))

    def compression(self) -> CompressionConfig | None:
        """None (stock layout) at r = 1.0, else the method at exactly K tokens."""
        if self.ratio == UNCOMPRESSED:
            return None
        return CompressionConfig(method=self.method, retention_ratio=self.ratio)  # type: ignore[arg-type]

    def token_count(self, num_frames: int, tokens_per_frame: int) -> int:
        """Placeholder tokens for one video: F * T + 1 uncompressed (tokens + newline), else max(1, round(r*F*T))."""
        if num_frames < 1 or tokens_per_frame < 1:
            raise ValueError(f"a video needs frames and tokens per frame, got {num_frames} x {tokens_per_frame}")
        config = self.compression()
        if config is None:
            return num_frames * tokens_per_frame + 1
        return config.target_tokens(num_frames * tokens_per_frame)


def requested_budget(mm_kwargs: Mapping[str, object]) -> VideoBudget:
    """The budget for merged mm_processor_kwargs (engine default overridden per request, key by key).

    No ratio: the stock layout. A method without a ratio is an error (the method would silently do nothing), as
    is tau: SCC's paper mode has a count that depends on the content.
    """
    if mm_kwargs.get(TAU_KEY) is not None:
        raise ValueError(
            f"mm_processor_kwargs {TAU_KEY!r} (SCC's paper mode) cannot be served: its token count depends on the "
            "video's content, but vLLM writes the video's placeholder tokens before the vision encoder runs. Use "
            f"{RATIO_KEY!r} instead: exactly max(1, round(r * frames * tokens_per_frame)) tokens, r in (0, 1]"
        )
    method, ratio = mm_kwargs.get(METHOD_KEY), mm_kwargs.get(RATIO_KEY)
    if ratio is None:
        if method is not None:
            raise ValueError(f"mm_processor_kwargs {METHOD_KEY!r} {method!r} needs {RATIO_KEY!r} in (0, 1] "
                             "(1.0 = no compression, vLLM's stock layout)")
        return VideoBudget()
    return VideoBudget(DEFAULT_METHOD if method is None else method, ratio)  # type: ignore[arg-type]


def retention_from_pruning_rate(rate: float) -> float:
    """vLLM's pruning rate q (fraction of video tokens pruned, [0, 1)) as our retention ratio r = 1 - q."""
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate < 1.0:
        raise ValueError(f"--video-pruning-rate must be a number in [0, 1) (the fraction pruned), got {rate!r}")
    return round(1.0 - rate, RATE_DECIMALS)


def pruning_defaults(pruning: tuple[str, float] | None, engine_kwargs: Mapping[str, object]) -> dict[str, object]:
    """vLLM's pruning spec ((method, q) when `--video-pruning-rate` q > 0, else None) as engine-default
    mm_processor_kwargs: {"method": m, "retention_ratio": 1 - q}; {} when pruning is off.

    Both flags and our keys in the engine's own `--mm-processor-kwargs` would be two engine defaults for one thing,
    so that raises. A request's mm_processor_kwargs override these defaults as they override any other.
    """
    if pruning is None:
        return {}
    method, rate = pruning
    if method not in PRUNING_METHODS:
        raise ValueError(f"--video-pruning-method must be one of {list(PRUNING_METHODS)}, got {method!r}")
    clash = [key for key in SERVING_KEYS if engine_kwargs.get(key) is not None]
    if clash:
        raise ValueError(f"--video-pruning-rate {rate} and --mm-processor-kwargs {clash} both set the engine's "
                         "default compression: give one of them")
    return {METHOD_KEY: method, RATIO_KEY: retention_from_pruning_rate(rate)}


def without_serving_keys(mm_kwargs: Mapping[str, object]) -> dict[str, object]:
    """mm_processor_kwargs minus ours, for the HF processor (which would warn about keys it does not know)."""
    return {k: v for k, v in mm_kwargs.items() if k not in SERVING_KEYS}
