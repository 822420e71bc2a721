"""VidCom2 (Liu et al., "Video Compression Commander", EMNLP 2025) as vLLM ships it
(`vllm.multimodal.video_prune.vidcom2`), on the pooled features [F, T, D]: a keep mask of the tokens least like
their video and their frame, with a larger share for frames unlike the rest of the video.

The rule (as vLLM 0.32 computes it, in the working dtype):
1. channels: the half (int(D / 2), at least 1) of lowest variance over all F * T tokens (population variance),
   taken in ascending-variance order, ties to the lower channel index;
2. tokens L2-normalised on those channels (norm floored at 1e-12);
3. a token's score is a multi-scale Gaussian affinity, sum over a in (1/8, 1/4, 1/2, 1, 2) of
   exp(-|x - c|^2 / (2a)), added in that order, to the video centre (mean of all tokens) plus the same to its
   frame's centre (mean of the frame's tokens); a high score means redundant;
4. frame shares: s_f = -(mean video affinity of frame f); p = softmax((s - max s) / 0.01); per-frame budget
   k_f = round(b * (1 + p_f - mean p), clamped <= 1, times T), clamped to [1, T] (round half to even), with
   b = 1 - q and q = 1 - r (the serving knob is q; computing b from q as vLLM does keeps the budgets identical
   to the last bit, since 1 - (1 - r) can differ from r);
5. each frame keeps its k_f lowest-scoring tokens;
6. the total is reconciled to the exact count: when the frames kept more, the kept tokens of highest score are
   dropped; when fewer, the unkept tokens of lowest score are added.

Ties (steps 1, 5 and 6) go to the lower index: a token of lower index is kept before an equal-scoring one of
higher index. vLLM uses `topk` there, whose choice among exactly equal scores is implementation-defined, so on
exact ties the two can keep different (equal-scoring) tokens; everywhere else the kept sets are identical.

The count is this package's K = max(1, round(r * F * T)) (`CompressionConfig.target_tokens`) in step 6, not
vLLM's max(F, int(F * T * (1 - q))). Where vLLM's int() gives one token fewer, we keep one more token, the one
step 6 would take next (the unkept token of lowest score, or the last kept token that vLLM's step 6 drops);
below one token per frame (K < F), where vLLM stops at F, step 6 goes on dropping the highest-scoring kept
tokens, so some frames keep none.
"""
from __future__ import annotations

import torch
from torch import Tensor
from torch.nn.functional import normalize, softmax

BANDWIDTHS = (0.125, 0.25, 0.5, 1.0, 2.0)  # a of exp(-d^2 / (2a)), powers of two: d^2 * (-0.5 / a) is exact
TEMPERATURE = 0.01  # of the frame-share softmax


def gaussian_affinity(x: Tensor, centre: Tensor) -> Tensor:
    """x [F, T, C], centre broadcastable to it -> [F, T]: sum over BANDWIDTHS of exp(-|x - centre|^2 / (2a))."""
    squared = ((x - centre) ** 2).sum(dim=-1)  # (F, T)
    total = torch.exp(squared * (-0.5 / BANDWIDTHS[0]))
    for a in BANDWIDTHS[1:]:
        total = total + torch.exp(squared * (-0.5 / a))
    return total


def vidcom2_scores(x: Tensor) -> tuple[Tensor, Tensor]:
    """x [F, T, D] -> (token scores [F, T], frame scores [F]): steps 1-3 and the s_f of step 4."""
    F, T, D = x.shape
    variance = x.reshape(F * T, D).var(dim=0, unbiased=False)  # (D,)
    channels = torch.sort(variance, stable=True).indices[: max(1, D // 2)]  # (C,) ascending variance
    unit = normalize(x.index_select(-1, channels), dim=-1)  # (F, T, C)
    video_affinity = gaussian_affinity(unit, unit.mean(dim=(0, 1), keepdim=True))  # (F, T)
    frame_affinity = gaussian_affinity(unit, unit.mean(dim=1, keepdim=True))  # (F, T)
    return video_affinity + frame_affinity, -video_affinity.mean(dim=-1)


def frame_budgets(frame_scores: Tensor, tokens_per_frame: int, retention_ratio: float) -> Tensor:
    """frame scores [F] -> tokens each frame keeps before reconciling [F] (long), step 4."""
    base = 1.0 - (1.0 - retention_ratio)  # b = 1 - q, q = 1 - r, in vLLM's float arithmetic
    share = softmax((frame_scores - frame_scores.max()) / TEMPERATURE, dim=0)  # (F,)
    scale = (base * (1.0 + share - share.mean())).clamp(max=1.0)  # (F,)
    return (scale * tokens_per_frame).round().long().clamp(min=1, max=tokens_per_frame)


def vidcom2_mask(x: Tensor, retention_ratio: float, keep: int) -> Tensor:
    """x [F, T, D] -> keep mask [F, T] (bool) of exactly `keep` tokens: steps 1-6, ties to the lower index."""
    F, T, _ = x.shape
    scores, frame_scores = vidcom2_scores(x)
    budgets = frame_budgets(frame_scores, T, retention_ratio)  # (F,)
    rank = torch.sort(scores, dim=1, stable=True).indices.argsort(dim=1)  # (F, T) rank of each token in its frame
    picked = (rank < budgets[:, None]).view(F * T)  # (F*T,) step 5
    order = torch.sort(scores.view(F * T), stable=True).indices  # (F*T,) lowest score first, ties to lower index
    in_picked = picked[order]  # (F*T,) along the order
    kept_picked = in_picked & (in_picked.cumsum(0) <= keep)  # the `keep` best picked ones, all when fewer
    added = ~in_picked & ((~in_picked).cumsum(0) <= keep - budgets.sum())  # none when the frames picked >= keep
    mask = torch.zeros(F * T, dtype=torch.bool, device=x.device)
    mask[order] = kept_picked | added
    return mask.view(F, T)
