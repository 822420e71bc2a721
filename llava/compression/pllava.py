"""PLLaVA's adaptive 3-D average pooling (Xu et al. 2024, "PLLaVA: Parameter-free LLaVA extension from images to
videos"), as a baseline of LLaVA-Scissor's tables.

PLLaVA pools the projector output of all frames jointly over (frames, rows, columns) to a fixed shape
(T', H', W') with adaptive average pooling, instead of LLaVA-OneVision's per-frame 2x2 bilinear pool. Here it
reads the unpooled grid [F, P, D] (P = 27 x 27 at 384 px) and replaces that pool; the output is T' * H' * W'
tokens in frame-major, row-major order. Adaptive pooling's output cell i of a side covers the input cells
[floor(i * In / Out), ceil((i + 1) * In / Out)); neighbouring cells overlap when Out does not divide In.

With `retention_ratio` instead of `pool_shape`, the shape is chosen by `ratio_shape` (its docstring states the rule)
and reported in `CompressionStats.pool_shape`.

Shape legend: F frames, P patches per frame (side x side), T pooled tokens per frame (t x t), D hidden size.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.nn.functional import adaptive_avg_pool3d

from .scc import SCCOutput
from .types import CompressionConfig, VisualExtras

# A count within this fraction of K counts as meeting the budget; among such shapes the one pooling the fewest
# frames together wins (see `ratio_shape`).
COUNT_TOLERANCE = 0.01


def ratio_shape(n_frames: int, side: int, k: int) -> tuple[int, int, int]:
    """The pool shape (T', H', W') for a budget of k tokens from F frames of a side x side grid.

    Candidates: T' a divisor of F (every output frame averages the same number of whole input frames, as PLLaVA's
    16 -> 16 and the 32 -> 16 of LLaVA-Scissor's authors do), H' <= side and W' = H' or H' + 1 (the grid is
    square; the extra column lets the count step more finely, e.g. (4, 12, 13) = 624 at 10% of 32 x 196).
    Among candidates whose count is within 1% of k, the largest T' wins (the least averaging over time, closest
    to PLLaVA's spatial-only pooling), then the nearest count; if none is that close, the nearest count wins,
    then the larger T'. Remaining ties go to the smaller count (stay within budget).
    """
    def rank(shape: tuple[int, int, int]) -> tuple:
        count = math.prod(shape)
        error = abs(count - k)
        if error <= COUNT_TOLERANCE * k:
            return (0, -shape[0], error, count)
        return (1, error, -shape[0], count)

    candidates = [(t, h, w) for t in range(1, n_frames + 1) if n_frames % t == 0
                  for h in range(1, side + 1) for w in (h, h + 1) if w <= side]
    return min(candidates, key=rank)


def resolve_shape(config: CompressionConfig, n_frames: int, side: int, tokens_per_frame: int) -> tuple[int, int, int]:
    """The (T', H', W') a call pools to: `pool_shape` checked against the video, else `ratio_shape` for
    K = round(r * F * T) (T = pooled tokens per frame, the count every method's ratio refers to)."""
    if config.pool_shape is None:
        return ratio_shape(n_frames, side, config.target_tokens(n_frames * tokens_per_frame))
    frames, rows, cols = config.pool_shape
    if frames > n_frames or rows > side or cols > side:
        raise ValueError(
            f"compression.pool_shape {config.pool_shape} does not fit this video: frames must be in [1, {n_frames}] "
            f"(the video's frames) and rows, columns in [1, {side}] (the unpooled grid's side)"
        )
    return config.pool_shape


def centre_bins(n_frames: int, tokens_per_frame: int, shape: tuple[int, int, int], device: torch.device) -> Tensor:
    """[F * T]: the output token each pooled token's centre falls in (for pictures; the pooling itself reads the
    unpooled grid). Pooled cell i of a t-cell side sits at the fraction (i + 1/2) / t of the frame, so it goes to
    output cell floor((i + 1/2) * Out / t) of that side; frame f goes to floor((f + 1/2) * T' / F)."""
    t = math.isqrt(tokens_per_frame)
    frames_out, rows_out, cols_out = shape
    frame_bin = (torch.arange(n_frames, device=device) * 2 + 1) * frames_out // (2 * n_frames)  # (F,)
    cell = torch.arange(t, device=device) * 2 + 1  # (t,) twice the centres
    row_bin, col_bin = cell * rows_out // (2 * t), cell * cols_out // (2 * t)  # (t,), (t,)
    index = (frame_bin[:, None, None] * rows_out + row_bin[None, :, None]) * cols_out + col_bin[None, None, :]
    return index.flatten()  # (F * t * t,)


def pllava(x: Tensor, config: CompressionConfig, extras: VisualExtras) -> SCCOutput:
    """Pooled features x [F, T, D] (for the count and the dtype) + extras.grid [F, P, D] -> tokens [T'H'W', D]."""
    n_frames, tokens_per_frame, dim = x.shape
    grid = extras.grid
    side = math.isqrt(grid.shape[1]) if grid.dim() == 3 else 0
    if grid.dim() != 3 or grid.shape[0] != n_frames or grid.shape[2] != dim or side * side != grid.shape[1]:
        raise ValueError(f"extras.grid must be [F, P, D] = [{n_frames}, side * side, {dim}], got {tuple(grid.shape)}")
    if math.isqrt(tokens_per_frame) ** 2 != tokens_per_frame:
        raise ValueError(f"{tokens_per_frame} pooled tokens per frame do not form a square grid")
    shape = resolve_shape(config, n_frames, side, tokens_per_frame)
    cells = grid.to(x.dtype).view(n_frames, side, side, dim).permute(3, 0, 1, 2)  # (D, F, side, side)
    tokens = adaptive_avg_pool3d(cells, shape).flatten(1).T.contiguous()  # (T' * H' * W', D)
    assignment = centre_bins(n_frames, tokens_per_frame, shape, x.device)  # (F * T,)
    return SCCOutput(tokens, assignment, tokens.shape[0], float("nan"), float("nan"), pool_shape=shape)
