"""EVS (Efficient Video Sampling), the video token pruning vLLM ships (`vllm.multimodal.video_prune.evs`), on the
pooled features [F, T, D]: a keep mask of the K tokens that changed most since the previous frame.

The rule (as vLLM 0.32 computes it):
- a token's score is its dissimilarity to the token at the same position one frame earlier, `1 - cos`, with
  `torch.nn.functional.cosine_similarity` (norms floored at 1e-8), computed as `1 - similarity` in the working
  dtype: that subtraction rounds distinct similarities to equal scores (in bf16 often), and those are ties;
- the first frame has no predecessor and ranks above every other token, so it is always kept first;
- one global ranking over all F * T tokens, highest score first, ties to the lower index (a stable sort); the K
  first tokens are kept, in their original order.

The count is this package's K = max(1, round(r * F * T)) (`CompressionConfig.target_tokens`), not vLLM's
max(T, int(F * T * (1 - q))) with q = 1 - r. Both take a prefix of the same ranking, so where the counts differ
the kept sets differ only at the end of that prefix: where vLLM's int() gives one token fewer, we also keep the
next token of the ranking (the most dissimilar token vLLM drops); below one frame (K < T), where vLLM keeps the
whole first frame, we keep the first frame's K first tokens in raster order.
"""
from __future__ import annotations

import torch
from torch import Tensor
from torch.nn.functional import cosine_similarity


def evs_scores(x: Tensor) -> Tensor:
    """x [F, T, D] -> scores [F, T]: 1 - cos to the same position of the previous frame; +inf on frame 0."""
    first = torch.full_like(x[:1, :, 0], float("inf"))  # (1, T)
    dissimilarity = 1 - cosine_similarity(x[1:], x[:-1], dim=-1)  # (F - 1, T)
    return torch.cat([first, dissimilarity], dim=0)  # (F, T)


def evs_mask(x: Tensor, keep: int) -> Tensor:
    """x [F, T, D] -> keep mask [F, T] (bool) of the `keep` highest-scoring tokens (ties to the lower index)."""
    F, T, _ = x.shape
    order = torch.sort(evs_scores(x).view(F * T), descending=True, stable=True).indices  # (F*T,)
    mask = torch.zeros(F * T, dtype=torch.bool, device=x.device)
    mask[order[:keep]] = True
    return mask.view(F, T)
