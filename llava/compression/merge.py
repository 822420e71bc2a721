"""The final merge step shared by SCC and the ablation selectors (paper Eq. 7-8, "inspired by ToMe").

Every original token goes to its most similar kept token (argmax cosine, ties to the lowest index); kept token
j becomes (kept_j + sum of its assigned tokens) / (count_j + 1). The [N, K] similarity is computed in row tiles
so memory stays bounded for long videos.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .graph import unit

_TILE_ROWS = 4096


def merge_into_kept(x: Tensor, kept: Tensor, x_unit: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """x [N, D] and kept [K, D] (one dtype: the working precision) -> merged tokens [K, D] and assignment [N]
    (index into kept); similarities, argmax and the accumulation run in that dtype.

    `kept` is consumed: the merged tokens are accumulated into it (no second [K, D] buffer; at the 7B width each
    one costs tens of ms of fresh-memory page faults). x_unit: x already L2-normalised, when the caller has it.
    """
    kept_n = unit(kept)  # (K, D)
    x_unit = unit(x) if x_unit is None else x_unit  # (N, D)
    assignment = torch.cat([(rows @ kept_n.T).argmax(dim=1) for rows in x_unit.split(_TILE_ROWS)])  # (N,)
    wide = accumulation_dtype(x.dtype)  # counts stay exact in fp16 / bf16 modes too
    counts = torch.ones(kept.shape[0], dtype=wide, device=x.device).index_add_(
        0, assignment, torch.ones_like(assignment, dtype=wide))  # (K,) 1 + tokens assigned
    merged = accumulate_rows(kept, assignment, x).div_(counts[:, None])  # (K, D), in kept's memory and dtype
    return merged, assignment


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32, or float64 for float64: where fp16 / bf16 sums and counts run (chosen in Python: asking torch to
    promote the dtypes dispatches an op)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def segment_sum(values: Tensor, index: Tensor, size: int) -> Tensor:
    """values [N, D] summed into a new [size, D] by index [N]."""
    return accumulate_rows(values.new_zeros(size, values.shape[1]), index, values)


def accumulate_rows(out: Tensor, index: Tensor, values: Tensor) -> Tensor:
    """out[index[i]] += values[i] in place, bit-identical from run to run.

    CUDA's accumulating index_put_ sorts indices (deterministic) while its index_add_ uses atomics; on CPU it is
    the other way round, so pick the deterministic kernel per device.
    """
    if values.is_cuda:
        return out.index_put_((index,), values, accumulate=True)
    return out.index_add_(0, index, values)
