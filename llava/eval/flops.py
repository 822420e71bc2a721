"""LLM-stage FLOPs as LLaVA-Scissor counts them for its Table 5 (the paper's Eq. 9, which it takes from DyCoke).

Eq. 9, for k visual tokens, T layers, hidden size d, FFN size c and a predicted answer length of R tokens:

    FLOPs = T (4 k d^2 + 2 k^2 d + 2 k d c) + T R ((4 d^2 + 2 d c) + 2 (d k + d (R + 1) / 2))

The first term is the prefill of the k tokens, counted as FastV counts it: one per multiply-accumulate, for the
four attention projections (4 k d^2), the attention scores and weighted values (2 k^2 d) and a two-matrix FFN
(2 k d c); the second is R decode steps, each attending to the k cached tokens plus the answer so far. It is the
paper's yardstick, not a count of Qwen2's actual operations (grouped KV heads, a three-matrix FFN). The paper's
R is 100 and its 7B is Qwen2.5-7B (T = 28, d = 3584, c = 18944): k = 6272 (32 frames x 196 tokens) gives 41.4
TFLOPs, its 100% row. Text tokens are not counted.

A method that prunes inside the LLM (FastV) has a different k per layer: `layered_llm_flops` sums Eq. 9's
per-layer term over the layers, each at its own count (FastV at layer K: layers 0..K-1 at N, the rest at N').
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

PREDICTED_LENGTH = 100  # the paper's R


@dataclass(frozen=True)
class LLMShape:
    """What Eq. 9 reads of a language model: layers (T), hidden size (d), FFN intermediate size (c)."""

    layers: int
    hidden: int
    ffn: int


def layer_flops(tokens: float, shape: LLMShape, predicted: int = PREDICTED_LENGTH) -> float:
    """Eq. 9 for one layer that sees `tokens` visual tokens: its prefill plus `predicted` decode steps."""
    k, d, c, r = tokens, shape.hidden, shape.ffn, predicted
    prefill = 4 * k * d**2 + 2 * k**2 * d + 2 * k * d * c
    decode = r * ((4 * d**2 + 2 * d * c) + 2 * (d * k + d * (r + 1) / 2))
    return prefill + decode


def llm_flops(tokens: float, shape: LLMShape, predicted: int = PREDICTED_LENGTH) -> float:
    """Eq. 9: every layer at the same `tokens` (a method that compresses before the LLM)."""
    return shape.layers * layer_flops(tokens, shape, predicted)


def layered_llm_flops(tokens_per_layer: Sequence[float], shape: LLMShape,
                      predicted: int = PREDICTED_LENGTH) -> float:
    """Eq. 9's layer term summed over layers with a count each (a method that prunes inside the LLM)."""
    if len(tokens_per_layer) != shape.layers:
        raise ValueError(f"one token count per layer: {shape.layers} layers, got {len(tokens_per_layer)} counts")
    return sum(layer_flops(k, shape, predicted) for k in tokens_per_layer)


def pruned_at_layer(tokens: int, kept: int, layer: int, shape: LLMShape) -> list[int]:
    """Per-layer counts of a method that keeps `kept` of `tokens` from decoder layer `layer` on (FastV's K):
    layers 0 .. layer - 1 see all tokens, the rest the kept ones."""
    if not 0 <= layer <= shape.layers:
        raise ValueError(f"pruning layer must be in [0, {shape.layers}], got {layer}")
    return [tokens] * layer + [kept] * (shape.layers - layer)


def implied_tokens(flops: float, shape: LLMShape, predicted: int = PREDICTED_LENGTH) -> float:
    """The k at which `llm_flops` equals `flops` (Eq. 9 is a quadratic in k, increasing for k >= 0): the token
    count a printed FLOPs figure stands for."""
    d, c, r, layers = shape.hidden, shape.ffn, predicted, shape.layers
    square = layers * 2 * d  # coefficient of k^2
    linear = layers * (4 * d**2 + 2 * d * c + 2 * r * d)  # of k
    constant = layers * r * (4 * d**2 + 2 * d * c + d * (r + 1)) - flops
    return (-linear + math.sqrt(linear**2 - 4 * square * constant)) / (2 * square)
