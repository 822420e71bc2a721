"""Our own prefill / decode verbs over transformers' Qwen2 decoder layers, for methods that prune inside the LLM.

transformers' `Qwen2Model.forward` builds one attention mask for every layer from the cache's first layer, so it
cannot run a model whose upper layers cache fewer rows than its lower ones (FastV keeps every row below layer K
and only the kept rows from K on). Here the model's own parts are called in the style of gpt-fast: the embedding,
`rotary_emb`, the decoder layers in groups (`LayerGroup`: layers that cache the same rows share one key mask), the
final `norm` and `lm_head`, with a transformers `DynamicCache`. Each group's 4-D mask comes from transformers'
`create_causal_mask` sized against that group's first layer, so the attention backend (eager / sdpa / flash) is
the model's own. `generate_tokens` is the decode loop: greedy or sampling with the checkpoint's generation config
merged with the caller's keywords, stop tokens and padding of finished rows as transformers' generation does.

Shape legend: B batch, L prompt length, M rows a group caches, D hidden size, V vocabulary, N new tokens.
"""
from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from transformers import DynamicCache, GenerationConfig, LogitsProcessorList
from transformers.generation.logits_process import (
    MinPLogitsWarper,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)
from transformers.masking_utils import create_causal_mask


@dataclass
class LayerGroup:
    """Decoder layers [start, stop) whose KV cache holds the same rows; key_mask [B, M] is 1 on real rows and 0 on
    left padding, and grows by one column per decode step."""

    start: int
    stop: int
    key_mask: Tensor


@dataclass
class DecodeState:
    """What decoding needs after prefill: the cache, the layer groups and each row's next position [B] (the
    original prompt length, whatever the upper layers dropped)."""

    cache: DynamicCache
    groups: list[LayerGroup]
    next_position: Tensor


def check_layer(knob: str, layer: int, n_layers: int) -> None:
    """An in-LLM method's layer (FastV's K, DyCoke's L) must leave at least one layer below it (the one whose
    attention is scored) and one at or above it (the ones that prune)."""
    if not 1 <= layer < n_layers:
        raise ValueError(f"{knob} must be in [1, {n_layers - 1}] for this {n_layers}-layer LLM, got {layer}")


def group_mask(lm: nn.Module, hidden: Tensor, key_mask: Tensor, cache: DynamicCache, layer: int) -> Any:
    """The attention mask the model's backend wants for queries `hidden` [B, q, D] against the cached rows of
    `layer` plus the new ones (key_mask [B, cached + q]); sized against that layer, not the first one."""
    return create_causal_mask(config=lm.model.config, inputs_embeds=hidden, attention_mask=key_mask, cache=cache,
                              layer_idx=layer)


def run_layers(lm: nn.Module, hidden: Tensor, start: int, stop: int, mask: Any,
               rope: tuple[Tensor, Tensor], positions: Tensor, cache: DynamicCache) -> Tensor:
    """Decoder layers [start, stop) on hidden [B, q, D] -> [B, q, D], appending their keys / values to `cache`."""
    for layer in lm.model.layers[start:stop]:
        hidden = layer(hidden, attention_mask=mask, position_ids=positions, cache=cache, use_cache=True,
                       position_embeddings=rope)
    return hidden


def head_logits(lm: nn.Module, hidden: Tensor) -> Tensor:
    """Final norm and lm_head: hidden [B, q, D] -> logits [B, q, V] in float32 (as transformers' generation
    scores them)."""
    return lm.lm_head(lm.model.norm(hidden)).float()


def prefill(lm: nn.Module, embeds: Tensor, key_mask: Tensor, positions: Tensor,
            all_logits: bool = False) -> tuple[Tensor, DecodeState]:
    """The prompt [B, L, D] (key_mask / positions [B, L]) through every layer, every row cached in one group ->
    (logits of the last row [B, 1, V], or of every row [B, L, V] when all_logits; the decode state)."""
    cache = DynamicCache(config=lm.model.config)
    rope = lm.model.rotary_emb(embeds, positions)
    n_layers = len(lm.model.layers)
    hidden = run_layers(lm, embeds, 0, n_layers, group_mask(lm, embeds, key_mask, cache, 0), rope, positions, cache)
    state = DecodeState(cache, [LayerGroup(0, n_layers, key_mask)], positions[:, -1] + 1)
    return head_logits(lm, hidden if all_logits else hidden[:, -1:]), state


def step_inputs(lm: nn.Module, state: DecodeState, tokens: Tensor) -> tuple[Tensor, Tensor, tuple[Tensor, Tensor]]:
    """A decode step's inputs for new ids [B]: (embeddings [B, 1, D], positions [B, 1], their rotary cos / sin);
    every group's key mask grows by one column for the new row and the next position advances."""
    hidden = lm.get_input_embeddings()(tokens[:, None])  # (B, 1, D)
    positions = state.next_position[:, None]  # (B, 1)
    for group in state.groups:
        group.key_mask = torch.cat([group.key_mask, group.key_mask.new_ones(tokens.shape[0], 1)], dim=1)  # (B, M+1)
    state.next_position = state.next_position + 1
    return hidden, positions, lm.model.rotary_emb(hidden, positions)


def decode_step(lm: nn.Module, state: DecodeState, tokens: Tensor) -> Tensor:
    """One new token per row (ids [B]) through every layer group -> next-token logits [B, V]; the new rows are
    cached in every layer and every group's key mask grows by one."""
    hidden, positions, rope = step_inputs(lm, state, tokens)
    for group in state.groups:
        mask = group_mask(lm, hidden, group.key_mask, state.cache, group.start)
        hidden = run_layers(lm, hidden, group.start, group.stop, mask, rope, positions, state.cache)
    return head_logits(lm, hidden)[:, -1]  # (B, V)


# ---- the decode loop ----------------------------------------------------------------------------------------
SUPPORTED_KEYWORDS = ("max_new_tokens", "max_length", "do_sample", "temperature", "top_k", "top_p", "min_p",
                      "repetition_penalty", "eos_token_id", "pad_token_id", "num_beams", "use_cache",
                      "logits_processor")
DEFAULT_MAX_LENGTH = 20  # transformers' length limit (prompt + new tokens) when a config sets no limit


def generation_settings(lm: nn.Module, kwargs: dict[str, Any]) -> tuple[GenerationConfig, LogitsProcessorList]:
    """The checkpoint's generation config updated with the caller's keywords, and the processors it implies
    (repetition penalty; with sampling: temperature, top-k, top-p, min-p; then the caller's `logits_processor`).
    Keywords this loop does not implement raise instead of being ignored."""
    unknown = sorted(set(kwargs) - set(SUPPORTED_KEYWORDS))
    if unknown:
        raise ValueError(f"generation with an in-LLM compression method takes {list(SUPPORTED_KEYWORDS)}; "
                         f"got unsupported {unknown}")
    kwargs = dict(kwargs)
    extra = kwargs.pop("logits_processor", None) or []
    config = copy.deepcopy(lm.generation_config)
    config.update(**kwargs)
    if (config.num_beams or 1) != 1:
        raise ValueError(f"generation with an in-LLM compression method is greedy or sampling: num_beams must be 1, "
                         f"got {config.num_beams}")
    processors = LogitsProcessorList()
    if config.repetition_penalty is not None and config.repetition_penalty != 1.0:
        processors.append(RepetitionPenaltyLogitsProcessor(config.repetition_penalty))
    if config.do_sample:
        if config.temperature is not None and config.temperature != 1.0:
            processors.append(TemperatureLogitsWarper(config.temperature))
        if config.top_k:
            processors.append(TopKLogitsWarper(config.top_k))
        if config.top_p is not None and config.top_p < 1.0:
            processors.append(TopPLogitsWarper(config.top_p))
        if config.min_p is not None:
            processors.append(MinPLogitsWarper(config.min_p))
    processors.extend(extra)
    return config, processors


def generate_tokens(first_logits: Tensor, step: Callable[[Tensor], Tensor], config: GenerationConfig,
                    processors: LogitsProcessorList, prompt_length: int) -> Tensor:
    """Logits of the prompt's last row [B, V] and a decode step (ids [B] -> logits [B, V]) -> new ids [B, N].

    Greedy (argmax) or sampling (multinomial over the processed softmax). A row that emitted a stop id (the
    config's `eos_token_id`) gets `pad_token_id` afterwards; the loop ends when every row has stopped or after
    `max_new_tokens` (else `max_length` minus the prompt length) tokens, as transformers' generation does.
    """
    eos = config.eos_token_id
    stops = torch.tensor([] if eos is None else [eos] if isinstance(eos, int) else list(eos),
                         dtype=torch.long, device=first_logits.device)
    pad = config.pad_token_id if config.pad_token_id is not None else (int(stops[0]) if stops.numel() else 0)
    budget = config.max_new_tokens
    if budget is None:
        budget = max((config.max_length or DEFAULT_MAX_LENGTH) - prompt_length, 0)
    out = torch.empty(first_logits.shape[0], 0, dtype=torch.long, device=first_logits.device)  # (B, 0)
    running = torch.ones(first_logits.shape[0], dtype=torch.bool, device=first_logits.device)  # (B,)
    logits = first_logits
    for _ in range(budget):
        scores = processors(out, logits)  # (B, V)
        if config.do_sample:
            token = torch.multinomial(scores.softmax(dim=-1), num_samples=1)[:, 0]  # (B,)
        else:
            token = scores.argmax(dim=-1)  # (B,)
        token = torch.where(running, token, pad)
        out = torch.cat([out, token[:, None]], dim=1)  # (B, n+1)
        running = running & ~torch.isin(token, stops)
        if not bool(running.any()) or out.shape[1] == budget:  # the loop's one host read per token
            break
        logits = step(token)
    return out
