"""FastV inside the LLM, KV-cache variant: prune video tokens once at prefill, at decoder layer K.

FastV (Chen et al., "An Image is Worth 1/2 Tokens After Layer 2") ranks the visual tokens by the attention the last
prompt token pays them at layer K-1 (softmax per head, mean over heads) and drops the least attended ones from
layer K on, keeping the survivors' original positions. Here, for video: one budget over all of a row's video tokens,
round(r * N) of N kept (ties go to the lower index), in original order; layers below K cache every row, layers K
and up cache only the text rows and the kept video rows, and decoding attends to that fixed set with positions
continuing from the original prompt length. FastV's first version instead re-ran and re-pruned the whole sequence
at every decode step (no KV cache); pruning once at prefill is its KV-cache variant.

The attention row is recomputed, not read from an eager layer: the layer's own q_proj on its input's last row,
rotated with the model's rotary embedding, against the post-RoPE keys layer K-1 just cached (one row, O(H * L * Dk)),
so the model keeps sdpa / flash attention and no [L, L] map is built.

Shape legend: B batch, L prompt length, M rows kept from layer K on, D hidden size, H heads, G query heads per key
head, Dk head size, V vocabulary.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from transformers import DynamicCache
from transformers.models.qwen2.modeling_qwen2 import apply_rotary_pos_emb

from llava.compression import CompressionConfig
from llava.compression.types import METHOD_SPECS
from llava.model.llm_loop import DecodeState, LayerGroup, check_layer, group_mask, head_logits, run_layers


@dataclass
class FastVPrefill:
    """Prefill's result: logits [B, M, V] of the rows that reach the last layer (the last one is the next-token
    prediction), the decode state, and per row the video tokens entering the LLM and kept from layer K on [B]."""

    logits: Tensor
    state: DecodeState
    video_in: Tensor
    video_kept: Tensor


def last_row_attention(layer: nn.Module, hidden_last: Tensor, keys: Tensor, rope_last: tuple[Tensor, Tensor],
                       key_mask: Tensor) -> Tensor:
    """Decoder layer `layer`'s attention of its last query row, mean over heads -> [B, L] (float32).

    hidden_last [B, 1, D] is the layer's input at the last row; keys [B, Hkv, L, Dk] its cached post-RoPE keys;
    key_mask [B, L] masks left padding. softmax(q k^T * Dk^-0.5) in float32; the last row needs no causal mask.
    """
    attn = layer.self_attn
    B, _, _ = hidden_last.shape
    query = attn.q_proj(layer.input_layernorm(hidden_last)).view(B, 1, -1, attn.head_dim).transpose(1, 2)  # (B,H,1,Dk)
    query, _ = apply_rotary_pos_emb(query, query, *rope_last)  # (B, H, 1, Dk)
    _, kv_heads, L, head_dim = keys.shape
    grouped = query.float().view(B, kv_heads, -1, head_dim)  # (B, Hkv, G, Dk): head h uses key head h // G
    logits = grouped @ keys.float().transpose(-1, -2) * attn.scaling  # (B, Hkv, G, L)
    logits = logits.masked_fill(~key_mask.bool()[:, None, None], float("-inf"))
    return logits.softmax(dim=-1).flatten(1, 2).mean(dim=1)  # (B, L)


def keep_rows(scores: Tensor, video: Tensor, real: Tensor, ratio: float) -> tuple[Tensor, Tensor]:
    """Rows kept from layer K on -> (keep [B, L] bool, video tokens kept per row [B]): every real non-video row,
    and per row the round(ratio * N) video rows of highest score (at least 1 when N > 0; ties to the lower index)."""
    n_video = video.sum(dim=1)  # (B,)
    kept = (ratio * n_video.double()).round().long()  # round half to even, as Python's round
    kept = torch.where(n_video > 0, kept.clamp(min=1), 0)  # (B,)
    return (real & ~video) | top_video(scores, video, kept), kept  # (B, L), (B,)


def top_video(scores: Tensor, video: Tensor, kept: Tensor) -> Tensor:
    """scores / video [B, L], kept [B] -> [B, L] bool: per row the kept[b] video rows of highest score, ties to
    the lower index (a stable sort), so the choice never depends on the kernel's top-k order."""
    ranked = scores.masked_fill(~video, float("-inf"))  # (B, L)
    order = torch.sort(ranked, dim=1, descending=True, stable=True).indices  # (B, L): ties keep the lower index
    columns = torch.arange(order.shape[1], device=order.device).expand_as(order)  # (B, L)
    ranks = torch.empty_like(order).scatter_(1, order, columns)  # (B, L): each row's rank by score
    return video & (ranks < kept[:, None])  # (B, L)


def gather_index(keep: Tensor) -> tuple[Tensor, Tensor]:
    """keep [B, L] -> (index [B, M], mask [B, M]): each row's kept positions in order, left padded (index 0,
    mask 0) to the longest row, as the prompts are."""
    counts = keep.sum(dim=1)  # (B,)
    M = int(counts.max())  # the one host read of the pruning: the new length
    slot = keep.long().cumsum(dim=1) - 1 + (M - counts)[:, None]  # (B, L): target column of each kept row
    index = keep.new_zeros(keep.shape[0], M, dtype=torch.long)
    mask = keep.new_zeros(keep.shape[0], M, dtype=torch.long)
    rows = torch.arange(keep.shape[0], device=keep.device)[:, None].expand_as(keep)  # (B, L)
    positions = torch.arange(keep.shape[1], device=keep.device).expand_as(keep)  # (B, L)
    index[rows[keep], slot[keep]] = positions[keep]
    mask[rows[keep], slot[keep]] = 1
    return index, mask


def fastv_prefill(lm: nn.Module, embeds: Tensor, key_mask: Tensor, positions: Tensor, video: Tensor,
                  config: CompressionConfig, all_logits: bool = False) -> FastVPrefill:
    """The prompt [B, L, D] (key_mask / positions [B, L], video [B, L] marks video tokens) through `lm` with
    FastV at layer K = config.fastv_layer keeping config.retention_ratio of each row's video tokens. Logits for
    the last row only [B, 1, V] unless all_logits (every kept row [B, M, V])."""
    k, n_layers = config.fastv_layer, len(lm.model.layers)
    check_layer("fastv_layer", k, n_layers)
    cache = DynamicCache(config=lm.model.config)
    rope = lm.model.rotary_emb(embeds, positions)  # cos, sin: (B, L, Dk)
    mask = group_mask(lm, embeds, key_mask, cache, 0)
    hidden = run_layers(lm, embeds, 0, k - 1, mask, rope, positions, cache)  # (B, L, D)
    last = hidden[:, -1:]  # (B, 1, D): layer K-1's input at the last prompt row
    hidden = run_layers(lm, hidden, k - 1, k, mask, rope, positions, cache)  # (B, L, D)
    rope_last = (rope[0][:, -1:], rope[1][:, -1:])
    scores = last_row_attention(lm.model.layers[k - 1], last, cache.layers[k - 1].keys, rope_last, key_mask)
    keep, kept = keep_rows(scores, video, key_mask.bool(), config.retention_ratio)
    index, kept_mask = gather_index(keep)  # (B, M), (B, M)
    hidden = hidden.gather(1, index[..., None].expand(-1, -1, hidden.shape[-1]))  # (B, M, D)
    kept_positions = positions.gather(1, index)  # (B, M): original positions, with gaps
    kept_rope = lm.model.rotary_emb(hidden, kept_positions)
    mask = group_mask(lm, hidden, kept_mask, cache, k)
    hidden = run_layers(lm, hidden, k, n_layers, mask, kept_rope, kept_positions, cache)  # (B, M, D)
    groups = [LayerGroup(0, k, key_mask), LayerGroup(k, n_layers, kept_mask)]
    state = DecodeState(cache, groups, positions[:, -1] + 1)
    return FastVPrefill(head_logits(lm, hidden if all_logits else hidden[:, -1:]), state, video.sum(dim=1), kept)


@dataclass(frozen=True)
class LLMTokenCounts:
    """Video tokens per LLM layer for one video (the names are InferenceReport's fields)."""

    llm_layers: int
    prune_layer: int | None
    video_tokens_llm_input: int
    video_tokens_after_prune: float
    video_tokens_layer_mean: float


def llm_token_counts(config: CompressionConfig, n_video: int, n_layers: int,
                     decode_attended: float | None = None) -> LLMTokenCounts:
    """Counts for n_video tokens entering an n_layers LLM under `config`: FastV keeps config.target_tokens(N) from
    layer K on; DyCoke's decode stage, measured, `decode_attended` from layer L on (the mean over decode steps,
    `LlavaOnevisionVideoModel.decode_video_tokens`; N when not given); every other method keeps all N."""
    if config.method == "dycoke" and config.dycoke_p is not None:
        after = float(n_video) if decode_attended is None else decode_attended
        layer = config.dycoke_l
        return LLMTokenCounts(n_layers, layer, n_video, after, layer_mean_tokens(n_video, after, layer, n_layers))
    if METHOD_SPECS[config.method].stage != "in_llm":
        return LLMTokenCounts(n_layers, None, n_video, n_video, float(n_video))
    kept = config.target_tokens(n_video) if n_video else 0
    k = config.fastv_layer
    return LLMTokenCounts(n_layers, k, n_video, kept, layer_mean_tokens(n_video, kept, k, n_layers))


def layer_mean_tokens(n_in: int, n_kept: float, k: int, n_layers: int) -> float:
    """Video tokens per layer averaged over the LLM's layers: (K * N + (L - K) * N') / L. FLOPs of the decoder
    scale with it, not with N'; at K = 3 of 28 layers, keeping 10% costs about 19.6% of keeping everything."""
    return (k * n_in + (n_layers - k) * n_kept) / n_layers
