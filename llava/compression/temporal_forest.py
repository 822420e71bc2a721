"""Boruvka spanning forests of the temporal graph, which is never held as a table (ratio mode).

Two sources of each round's strongest edges, same choices as the dense `graph.boruvka` (strongest edge per
component, ties to the lowest target component), so the same forest:
- an edge list {sim > floor} kept from one tiled pass (`graph.weighted_edges`): rounds cost O(edges) and no
  similarity is recomputed; exact for every tree edge above the floor, which is all the ratio search needs;
- the upper triangle's row tiles, recomputed every round (`tiled_boruvka`): the whole tree, one pass per round,
  for the rare cut below every floor.
Memory stays O(tile x M + edges) either way; each round costs one host read.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .graph import NONE, Rows, forest_edges, merge_slots, upper_tiles

Outgoing = Callable[[Tensor, int], tuple[Tensor, Tensor]]  # (comp [M], C) -> strongest weight, target [C]


def edge_boruvka(
    u: Tensor, v: Tensor, w: Tensor, size: int,
    start: Tensor | None = None, count: int | None = None, max_merges: int | None = None,
) -> tuple[Tensor, Tensor, int]:
    """Maximum spanning forest of the edge list (u, v, w) over `size` nodes (-inf weights are no edges);
    start [size] with `count`: initial dense component labels; max_merges: at most that many edges, strongest
    first. Returns dense labels [size], the forest's edge weights (-inf padded) and the component count."""

    real = w > NONE  # (E,) -inf weights are no edges

    def outgoing(comp: Tensor, C: int) -> tuple[Tensor, Tensor]:
        cu, cv = comp[u], comp[v]  # (E,) each
        out = torch.where(cu != cv, w, NONE)  # edges inside a component are no longer candidates
        best = out.new_full((C,), NONE).scatter_reduce_(0, cu, out, "amax").scatter_reduce_(0, cv, out, "amax")
        # an edge matching its end's best is a real candidate unless that best is -inf (no edge), a target
        # `_rounds` discards
        target = torch.full((C,), C, device=w.device).scatter_reduce_(
            0, cu, torch.where(out == best[cu], cv, C), "amin").scatter_reduce_(
            0, cv, torch.where(out == best[cv], cu, C), "amin")
        return best, target

    def edges_left(comp: Tensor) -> Tensor:
        return ((comp[u] != comp[v]) & real).any()

    return _rounds(outgoing, size, w.device, start, count, max_merges, edges_left)


def tiled_boruvka(upper_rows: Rows, size: int) -> tuple[Tensor, Tensor, int]:
    """Maximum spanning tree of the whole graph whose similarity table's upper triangle `upper_rows` gives, in the
    row tiles of `graph.upper_tiles` (so every pair has the bits the edge lists read): one pass per round."""

    first = upper_rows(0, 1)  # the working precision and device: weights keep it, so cuts compare exact values

    def outgoing(comp: Tensor, C: int) -> tuple[Tensor, Tensor]:
        node_w, node_t = _best_outgoing(upper_rows, size, comp, C, first.dtype)  # (M,) each
        best = node_w.new_full((C,), NONE).scatter_reduce_(0, comp, node_w, "amax")  # (C,)
        # members holding their component's best offer their target (C where they have no edge; a -inf best's
        # target is discarded by `_rounds`), the lowest wins
        target = torch.full((C,), C, device=comp.device).scatter_reduce_(
            0, comp, torch.where(node_w == best[comp], node_t, C), "amin")  # (C,)
        return best, target

    return _rounds(outgoing, size, first.device, None, None, None, None)


def _rounds(
    outgoing: Outgoing, size: int, device: torch.device,
    start: Tensor | None, count: int | None, max_merges: int | None, edges_left: Callable[[Tensor], Tensor] | None,
) -> tuple[Tensor, Tensor, int]:
    """Boruvka rounds given each component's strongest outgoing edge (weight, target component). `edges_left`
    (comp -> 0-d bool: does an edge still join two components?) is asked in the round's one host read, so the
    last round is not followed by one that only finds nothing left."""
    comp = torch.arange(size, device=device) if start is None else start  # (M,) node -> component
    C = size if start is None else count
    taken_weights, budget = [], max_merges
    while budget is None or budget > 0:
        best, target = outgoing(comp, C)  # (C,) each
        target = torch.where(best > NONE, target, torch.arange(C, device=device))  # self when no edge
        take = forest_edges(best[None], target[None], budget)  # (1, C)
        left = (lambda slot, comp=comp: edges_left(slot[0][comp])) if edges_left else None
        slot, new_c, merges, more = merge_slots(take, target[None], left)
        if merges == 0:
            break
        taken_weights.append(torch.where(take[0], best, NONE))
        comp, C = slot[0][comp], new_c
        budget = None if budget is None else budget - merges
        if not more:
            break
    weights = torch.cat(taken_weights) if taken_weights else torch.full((1,), NONE, device=device)
    return comp, weights, C


def _best_outgoing(upper_rows: Rows, size: int, comp: Tensor, C: int, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """Per node: the strongest similarity to another component and that component (ties -> lowest id); -inf
    and C where there is none. A tile of rows start .. stop holds each of its pairs (i < j) once and offers it
    to both ends: j to row i (a row maximum), i to column j (a column maximum)."""
    weight = torch.full((size,), NONE, dtype=dtype, device=comp.device)
    target = torch.full((size,), C, device=comp.device)
    for start, stop in upper_tiles(size):
        sim = upper_rows(start, stop).clone()  # (t, M - start) a copy: the rows may be a view of a table
        rows, cols = comp[start:stop], comp[start:]
        t = stop - start
        sim.masked_fill_(rows[:, None] == cols[None, :], NONE)  # inside a component: no edge
        sim[:, :t].masked_fill_(torch.ones(t, t, dtype=torch.bool, device=sim.device).tril_(), NONE)  # j <= i
        row_w = sim.amax(dim=1)  # (t,) for nodes start .. stop, partners j > i
        row_t = torch.where(sim == row_w[:, None], cols[None, :], C).amin(dim=1)
        col_w = sim.amax(dim=0)  # (M - start,) for nodes start .. M, partners i < j in this tile
        col_t = torch.where(sim == col_w[None, :], rows[:, None], C).amin(dim=0)
        _keep_best(weight[start:stop], target[start:stop], row_w, row_t)
        _keep_best(weight[start:], target[start:], col_w, col_t)
    return weight, torch.where(weight > NONE, target, C)


def _keep_best(weight: Tensor, target: Tensor, new_weight: Tensor, new_target: Tensor) -> None:
    """In place: take the new candidate where it is stronger, the lower target where it ties."""
    tie_target = torch.where(new_weight == weight, torch.minimum(target, new_target), target)
    target.copy_(torch.where(new_weight > weight, new_target, tie_target))
    weight.copy_(torch.maximum(weight, new_weight))
