"""How many video tokens a served request gets, from shapes and the retention ratio alone.

vLLM writes a video's placeholder tokens into the prompt before the vision encoder runs, so the count must follow
from the frame count, the tokens per frame and the ratio, never from the pixels. SCC's ratio mode keeps exactly
K = max(1, round(r * F * T)) tokens; both the processor (placeholders) and the model (embeddings) take K from
`CompressionConfig.target_tokens`, the function `compress` itself uses, so the two sides cannot drift.

r = 1.0 (or no ratio at all) means no compression and LLaVA-OneVision's stock layout: every pooled token plus one
`image_newline`, F * T + 1, exactly what stock vLLM serves. A compressed block has no newline, as `llava.model`'s
"auto" newline policy (LLaVA-Scissor's numbers were made that way).

This module imports nothing from vLLM, so it is tested in the package's own environment.
"""
from __future__ import annotations

from collections.abc import Mapping

from llava.compression import CompressionConfig

RATIO_KEY = "retention_ratio"  # the mm_processor_kwargs key users set (engine default or per request)
TAU_KEY = "tau"
SERVING_KEYS = (RATIO_KEY, TAU_KEY)  # ours, not the HF processor's
UNCOMPRESSED = 1.0


def retention_ratio(mm_kwargs: Mapping[str, object]) -> float:
    """The ratio in effect for merged mm_processor_kwargs (engine default overridden per request); 1.0 if unset.

    Raises ValueError naming the key for tau (not servable) and for any ratio outside (0, 1].
    """
    if mm_kwargs.get(TAU_KEY) is not None:
        raise ValueError(
            f"mm_processor_kwargs {TAU_KEY!r} (SCC's paper mode) cannot be served: its token count depends on the "
            "video's content, but vLLM writes the video's placeholder tokens before the vision encoder runs. Use "
            f"{RATIO_KEY!r} instead: exactly max(1, round(r * frames * tokens_per_frame)) tokens, r in (0, 1]"
        )
    value = mm_kwargs.get(RATIO_KEY)
    if value is None:
        return UNCOMPRESSED
    try:
        CompressionConfig(retention_ratio=value)  # type: ignore[arg-type]
    except (TypeError, ValueError) as err:
        raise ValueError(f"mm_processor_kwargs {RATIO_KEY!r}: {err}; use a number in (0, 1], e.g. 0.1") from err
    return float(value)  # type: ignore[arg-type]


def compression_for(ratio: float) -> CompressionConfig | None:
    """The compression a video at `ratio` gets: None (stock layout) at 1.0, SCC at exactly that budget below."""
    return None if ratio == UNCOMPRESSED else CompressionConfig(retention_ratio=ratio)


def video_token_count(num_frames: int, tokens_per_frame: int, ratio: float) -> int:
    """Placeholder tokens for one video: F * T + 1 uncompressed (tokens + newline), else K = max(1, round(r*F*T))."""
    if num_frames < 1 or tokens_per_frame < 1:
        raise ValueError(f"a video needs frames and tokens per frame, got {num_frames} x {tokens_per_frame}")
    config = compression_for(ratio)
    if config is None:
        return num_frames * tokens_per_frame + 1
    return config.target_tokens(num_frames * tokens_per_frame)


def without_serving_keys(mm_kwargs: Mapping[str, object]) -> dict[str, object]:
    """mm_processor_kwargs minus ours, for the HF processor (which would warn about keys it does not know)."""
    return {k: v for k, v in mm_kwargs.items() if k not in SERVING_KEYS}
