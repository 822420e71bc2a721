"""DyCoke's second stage: dynamic pruning of the video KV cache while decoding, at decoder layer L.

DyCoke (Tao et al., "DyCoke: Dynamic Compression of Tokens for Fast Video Large Language Models") first merges
tokens across frames before the LLM (`llava.compression.dycoke`, stage 1), then prunes the video part of the KV
cache at every decode step. As its official LLaVA-OneVision code does it: the prompt is prefilled whole (every
stage-1 token, every layer); at each decode step the new token's attention at layer L-1 (softmax per head, mean
over heads) over the video span is compared with the previous step's by cosine similarity; below 0.9 (always at
the first step, where there is no previous one), layers L and up attend for this step to only the int(N * (1 - P))
most attended of the N video tokens, plus every other token; otherwise to every video token. Layers below L always
attend to everything, and every token stays cached: a pruned token may come back at a later step.

Choices here: the attention row is recomputed from layer L-1's own q_proj and cached post-RoPE keys in float32
(`fastv.last_row_attention`), so the model keeps sdpa / flash attention; ties go to the lower index; the dropped
video keys are masked in the step's attention mask instead of gathered out of the cache (the same attention);
the previous step's vector starts empty for every generate call and is kept per batch row. The official code
keeps that vector across calls, so a sample's first step is compared with the previous sample's last one.

Shape legend: B batch, L0 prompt length, M cached rows, V vocabulary.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from llava.compression import CompressionConfig
from llava.model.fastv import last_row_attention, top_video
from llava.model.llm_loop import DecodeState, check_layer, group_mask, head_logits, prefill, run_layers, step_inputs

SIMILARITY = 0.9  # DyCoke's fixed threshold: a step at least this similar to the previous one keeps every token


@dataclass
class DyCokeState:
    """Stage 2's per-row state across one generate call.

    layer: L; keep: 1 - P; video [B, L0] marks the prompt's video tokens; previous [B, L0] is the last step's
    attention at layer L-1 over them (0 elsewhere), None before the first step; attended [B] sums the video tokens
    layers L and up attended to over the `steps` decode steps so far.
    """

    layer: int
    keep: float
    video: Tensor
    previous: Tensor | None = None
    attended: Tensor | None = None
    steps: int = 0

    def mean_attended(self) -> Tensor:
        """Video tokens attended by layers L and up, averaged over the decode steps [B] (all N before any step)."""
        if self.attended is None:
            return self.video.sum(dim=1).double()
        return self.attended / self.steps


def step_key_mask(scores: Tensor, key_mask: Tensor, state: DyCokeState) -> Tensor:
    """Layer L-1's attention of the new rows [B, M] -> the key mask [B, M] of layers L and up for this step.

    Rows whose video attention has cosine similarity below SIMILARITY with their previous step's (every row at the
    first step) drop all but their int(N * (1 - P)) most attended video tokens (ties to the lower index); the
    other rows keep every video token. Updates the state's previous vector and attended counts.
    """
    B, M = key_mask.shape
    video = F.pad(state.video, (0, M - state.video.shape[1]))  # (B, M): generated rows are not video
    vector = scores[:, :state.video.shape[1]] * state.video  # (B, L0): the video span's attention, 0 elsewhere
    if state.previous is None:
        prune = torch.ones(B, dtype=torch.bool, device=key_mask.device)  # (B,)
    else:
        prune = F.cosine_similarity(vector, state.previous, dim=1) < SIMILARITY  # (B,)
    state.previous = vector
    n_video = state.video.sum(dim=1)  # (B,)
    kept = (n_video.double() * state.keep).floor().long()  # (B,): int(N * (1 - P)), as the official code counts
    dropped = video & ~top_video(scores, video, kept) & prune[:, None]  # (B, M)
    attended = torch.where(prune, kept, n_video).double()  # (B,)
    state.attended = attended if state.attended is None else state.attended + attended
    state.steps += 1
    return key_mask * ~dropped  # (B, M)


def dycoke_step(lm: nn.Module, state: DecodeState, dycoke: DyCokeState, tokens: Tensor) -> Tensor:
    """One new token per row (ids [B]) -> next-token logits [B, V]: layers below L on every cached row, layer
    L-1's attention row recomputed, layers L and up on the rows `step_key_mask` leaves; the new rows are cached
    in every layer."""
    hidden, positions, rope = step_inputs(lm, state, tokens)  # (B, 1, D)
    (group,) = state.groups
    layer, n_layers = dycoke.layer, len(lm.model.layers)
    mask = group_mask(lm, hidden, group.key_mask, state.cache, 0)
    hidden = run_layers(lm, hidden, 0, layer - 1, mask, rope, positions, state.cache)  # (B, 1, D): layer L-1's input
    upper = run_layers(lm, hidden, layer - 1, layer, mask, rope, positions, state.cache)  # (B, 1, D)
    scores = last_row_attention(lm.model.layers[layer - 1], hidden, state.cache.layers[layer - 1].keys, rope,
                                group.key_mask)  # (B, M)
    upper_mask = group_mask(lm, upper, step_key_mask(scores, group.key_mask, dycoke), state.cache, layer)
    upper = run_layers(lm, upper, layer, n_layers, upper_mask, rope, positions, state.cache)  # (B, 1, D)
    return head_logits(lm, upper)[:, -1]  # (B, V)


def dycoke_prefill(lm: nn.Module, embeds: Tensor, key_mask: Tensor, positions: Tensor, video: Tensor,
                   config: CompressionConfig) -> tuple[Tensor, DecodeState, DyCokeState]:
    """The prompt [B, L0, D] (key_mask / positions / video [B, L0]) prefilled whole -> (next-token logits [B, V],
    the decode state, a fresh stage-2 state for L = config.dycoke_l and P = config.dycoke_p)."""
    check_layer("dycoke_l", config.dycoke_l, len(lm.model.layers))
    logits, state = prefill(lm, embeds, key_mask, positions)  # (B, 1, V)
    return logits[:, -1], state, DyCokeState(config.dycoke_l, 1.0 - config.dycoke_p, video.bool())
