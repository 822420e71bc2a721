"""DyCoke's first stage, temporal token merging (TTM; Tao et al., "DyCoke: Dynamic Compression of Tokens for Fast
Video Large Language Models", CVPR 2025), on the pooled features [F, T, D]: a keep mask, tokens that repeat the
previous frames are dropped.

The rule, as the official LLaVA-OneVision code applies it:
- pairs (i, i + 1), i = 0, 2, 4, ...: frame i + 1 keeps its `keep` tokens least similar (cosine, same token
  position) to frame i;
- groups of four, i = 0, 4, 8, ... while i < F - 4: frame i + 2 keeps its `keep` tokens least similar to frame i.
  The bound `i < F - 4` is the official loop's: at F = 32 it stops at i = 24, so frame 30 is never pruned. The
  paper's counts (3,098 tokens at k = 0.7 and 2,201 at k = 0.9 of 6,272 at F = 32) follow from it, so we keep it;
- keep = int((1 - dycoke_k) * T) per pruned frame, computed in Python floats as the official code does (k = 0.7
  gives int(58.8) = 58 of 196). Every similarity compares the original, unpruned frames.

Decisions where the official code gives no usable answer:
- Odd F: the official pair loop never reaches the last frame, which silently disappears from the video. Here the
  last frame is kept whole: it has no partner, so nothing marks its tokens as repeated.
- Order inside a pruned frame: spatial (raster) order. The official code emits a pruned frame's tokens in
  ascending-similarity order, which the splice then numbers with contiguous positions, so neighbouring positions
  hold spatially unrelated patches; raster order keeps the frame's layout, as every other method here does.
- Ties in similarity go to the lower token index (a stable sort).
- Similarity of a zero vector is 0 (the features are L2-normalised with a small floor, then multiplied).
"""
from __future__ import annotations

import functools
import logging

import torch
from torch import Tensor
from torch.nn.functional import normalize

logger = logging.getLogger(__name__)


def keep_per_frame(dycoke_k: float, tokens_per_frame: int) -> int:
    """Tokens a pruned frame keeps: int((1 - k) * T) in Python floats, as the official code computes it."""
    return int((1.0 - dycoke_k) * tokens_per_frame)


def reference_frames(num_frames: int) -> list[int]:
    """For every frame, the frame it is compared with, or -1 when it is kept whole (pair loop, then the
    groups-of-four loop with the official `i < F - 4` bound)."""
    reference = [-1] * num_frames
    for i in range(0, num_frames - 1, 2):
        reference[i + 1] = i
    for i in range(0, num_frames - 4, 4):
        reference[i + 2] = i
    return reference


@functools.lru_cache(maxsize=256)
def keep_for_target(num_frames: int, tokens_per_frame: int, target: int) -> int:
    """The per-frame keep (0 .. T - 1, every value some k in (0, 1] gives) whose total is nearest `target`; a tie
    goes to the smaller total, so a tie never spends more than the budget. Raises when `target` is below the
    count at k = 1.0 (the frames TTM never prunes). Cached, so the resolution is logged once per shape and budget.
    """
    F, T = num_frames, tokens_per_frame
    pruned = sum(r >= 0 for r in reference_frames(F))
    floor = (F - pruned) * T
    if target < floor:
        raise ValueError(
            f"dycoke cannot keep fewer than {floor} of {F * T} tokens ({floor / (F * T):.1%}) at F={F}, T={T}: "
            f"even dycoke_k=1.0 keeps whole the {F - pruned} frames it never prunes; the budget asks for {target} "
            "tokens. Raise retention_ratio, or use a method without a floor"
        )
    if pruned == 0:  # F = 1: nothing to prune, every budget at or above the floor keeps the frame
        return 0
    keep = min(T - 1, -((pruned - 2 * (target - floor)) // (2 * pruned)))  # nearest, ties down (integers only)
    logger.info("dycoke: budget %d of %d tokens at F=%d, T=%d -> %d tokens (%d per pruned frame, dycoke_k in "
                "(%.4f, %.4f])", target, F * T, F, T, floor + pruned * keep, keep, 1 - (keep + 1) / T, 1 - keep / T)
    return keep


def dycoke_mask(x: Tensor, keep: int) -> Tensor:
    """x [F, T, D] -> keep mask [F, T] (bool): frames TTM prunes keep their `keep` tokens least similar to their
    reference frame (ties to the lower index); the others are kept whole."""
    F, T, _ = x.shape
    reference = reference_frames(F)
    pruned = [f for f in range(F) if reference[f] >= 0]
    mask = torch.ones(F, T, dtype=torch.bool, device=x.device)
    if not pruned:
        return mask
    later = torch.tensor(pruned, device=x.device)  # (P,) frames to prune (shape-only: no device read)
    earlier = torch.tensor([reference[f] for f in pruned], device=x.device)  # (P,) the frame each is compared with
    unit = normalize(x, dim=-1)  # (F, T, D)
    similarity = (unit[later] * unit[earlier]).sum(dim=-1)  # (P, T)
    order = torch.sort(similarity, dim=1, stable=True).indices  # (P, T) ascending; ties to the lower index
    chosen = torch.zeros_like(similarity, dtype=torch.bool)  # (P, T)
    chosen.scatter_(1, order[:, :keep], True)
    mask[later] = chosen
    return mask
