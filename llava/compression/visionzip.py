"""VisionZip (Yang et al. 2024, "VisionZip: Longer is Better but Not Necessary in Vision Language Models"), in the
form its LLaVA-OneVision port takes, as a baseline of LLaVA-Scissor's tables.

Per frame, on the pooled tokens: the *dominant* tokens are those receiving the most attention in the vision tower's
last used layer (mean over heads, then over query rows, pooled to the token grid like the features); the
remaining tokens are summarised by *contextual* tokens: targets taken at a uniform stride among them (in spatial
order), every other remaining token assigned to the target whose key is most similar (argmax cosine over that
layer's keys, mean over heads, pooled), and each contextual token = target + mean(assigned) (target + 0 when none
was assigned). Dominant : contextual = 54 : 10, VisionZip's default.

Budget: exactly K = max(1, round(r * F * T)) tokens per video. Frame f gets floor((f + 1) K / F) - floor(f K / F)
tokens (each frame floor(K / F) or one more, the extra ones evenly spread over the video), of which
floor(54 k_f / 64) are dominant and the rest contextual. A frame whose budget is 0 (only when K < F) is dropped.
Output per frame, frames in order: [dominant in spatial order, contextual in target (spatial) order].

Shape legend: F frames, T pooled tokens per frame, D hidden size, Dk key size, K kept tokens.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .graph import unit
from .merge import accumulation_dtype, segment_sum
from .scc import SCCOutput
from .types import CompressionConfig, VisualExtras

DOMINANT, CONTEXTUAL = 54, 10  # VisionZip's default split (54 + 10 of 64 tokens)


def frame_budgets(n_frames: int, k: int, device: torch.device) -> Tensor:
    """[F] tokens per frame summing to exactly k: floor((f + 1) k / F) - floor(f k / F)."""
    edges = torch.arange(n_frames + 1, device=device) * k // n_frames  # (F + 1,)
    return edges[1:] - edges[:-1]  # (F,)


def split_tokens(attention: Tensor, keys: Tensor, budgets: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per-frame roles from scores [F, T], keys [F, T, Dk] and budgets [F]: masks dominant [F, T] and target
    [F, T], and nearest [F, T] = the token index of the target each token's key is most similar to (ties to the
    lower index; meaningful where the frame has targets)."""
    n_frames, n_tokens = attention.shape
    dominant_n = budgets * DOMINANT // (DOMINANT + CONTEXTUAL)  # (F,)
    contextual_n = budgets - dominant_n  # (F,)
    order = torch.sort(attention, dim=1, descending=True, stable=True).indices  # (F, T) ties to the lower index
    positions = torch.arange(n_tokens, device=attention.device).expand(n_frames, n_tokens)  # (F, T)
    rank = torch.empty_like(order).scatter_(1, order, positions)  # (F, T) rank of each token's score
    dominant = rank < dominant_n[:, None]  # (F, T)
    rest = ~dominant
    rest_pos = rest.cumsum(dim=1) - 1  # (F, T) position among the frame's remaining tokens, spatial order
    step = ((n_tokens - dominant_n) // contextual_n.clamp(min=1)).clamp(min=1)  # (F,) uniform stride
    target = rest & (rest_pos % step[:, None] == 0) & (rest_pos < (contextual_n * step)[:, None])  # (F, T)
    keys_unit = unit(keys)  # (F, T, Dk)
    similarity = keys_unit @ keys_unit.transpose(1, 2)  # (F, T, T)
    similarity.masked_fill_(~target[:, None, :], float("-inf"))
    return dominant, target, similarity.argmax(dim=2)  # (F, T), (F, T), (F, T)


def visionzip(x: Tensor, config: CompressionConfig, extras: VisualExtras) -> SCCOutput:
    """Pooled features x [F, T, D] + extras.attention [F, T] and extras.keys [F, T, Dk] -> exactly K tokens."""
    n_frames, n_tokens, dim = x.shape
    attention, keys = extras.attention, extras.keys
    if attention.shape != (n_frames, n_tokens) or keys.dim() != 3 or keys.shape[:2] != (n_frames, n_tokens):
        raise ValueError(f"extras.attention must be [F, T] = [{n_frames}, {n_tokens}] and extras.keys [F, T, Dk], got "
                         f"{tuple(attention.shape)} and {tuple(keys.shape)}")
    k = config.target_tokens(n_frames * n_tokens)
    budgets = frame_budgets(n_frames, k, x.device)  # (F,)
    dominant, target, nearest = split_tokens(attention.to(x.device, torch.float32), keys.to(x.device, x.dtype),
                                             budgets)
    merged = ~dominant & ~target & (budgets > 0)[:, None]  # (F, T) tokens summed into a contextual token
    frame = torch.arange(n_frames, device=x.device)[:, None]  # (F, 1)
    token = torch.arange(n_tokens, device=x.device)[None, :]  # (1, T)
    never = 2 * n_frames * n_tokens
    sort_key = torch.where(dominant | target, (2 * frame + target) * n_tokens + token, never)  # (F, T)
    kept = torch.sort(sort_key.flatten()).indices[:k]  # (K,) flat indices in output order
    out_pos = torch.full((n_frames * n_tokens,), -1, dtype=torch.long, device=x.device)
    out_pos[kept] = torch.arange(k, device=x.device)  # (F * T,) output index of each kept token
    into = out_pos[(frame * n_tokens + nearest).flatten()]  # (F * T,) output index of each token's nearest target
    assignment = torch.where(merged.flatten(), into, out_pos)  # (F * T,) -1 where dropped
    flat = x.reshape(n_frames * n_tokens, dim)  # (F * T, D)
    members = merged.flatten().nonzero().squeeze(1)  # (M,) the call's one host read
    wide = accumulation_dtype(x.dtype)
    sums = segment_sum(flat[members].to(wide), assignment[members], k)  # (K, D)
    counts = torch.zeros(k, dtype=wide, device=x.device).index_add_(
        0, assignment[members], torch.ones(members.shape[0], dtype=wide, device=x.device))  # (K,)
    tokens = (flat[kept].to(wide) + sums / counts.clamp(min=1)[:, None]).to(x.dtype)  # (K, D)
    return SCCOutput(tokens, assignment, k, float("nan"), float("nan"))
