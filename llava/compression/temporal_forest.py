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

import torch
from torch import Tensor

from .graph import NONE, Rows, merge_slots, upper_tiles


def edge_boruvka(
    u: Tensor, v: Tensor, w: Tensor, size: int,
    start: Tensor | None = None, count: int | None = None, max_merges: int | None = None,
) -> tuple[Tensor, Tensor, int]:
    """Maximum spanning forest of the edge list (u, v, w) over `size` nodes (-inf weights are no edges);
    start [size] with `count`: initial dense component labels; max_merges: at most that many edges, strongest
    first. Returns dense labels [size], the forest's edge weights (-inf padded) and the component count.

    The edges' end components are carried from round to round (relabelled by the merge), and the round's host
    read also asks whether an edge still joins two components, so the last round is not followed by one that
    only finds nothing left. Each reduction scatters from both ends of the E edges in turn: holding every edge
    twice (2E entries, one scatter each) saves 5 launches a round but cost 1.6x the time on CPU on dense graphs."""
    ids = torch.arange(size, device=w.device)
    comp, C = (ids, size) if start is None else (start, count)
    v = torch.where(w > NONE, v, u)  # no edge: a self loop, never between two components
    src, dst = (u, v) if start is None else (start[u], start[v])  # (E,) each end's component
    taken_weights, budget = [], max_merges
    while budget is None or budget > 0:
        out = w.masked_fill(src == dst, NONE)  # edges inside a component are no longer candidates
        best = out.new_full((C,), NONE).scatter_reduce_(0, src, out, "amax").scatter_reduce_(0, dst, out, "amax")
        # each end offers the other where the edge is its component's best (a component with no edge: discarded)
        target = torch.full((C,), C, device=w.device).scatter_reduce_(
            0, src, dst.masked_fill(out != best[src], C), "amin").scatter_reduce_(
            0, dst, src.masked_fill(out != best[dst], C), "amin")

        def relabel(slot: Tensor, src: Tensor = src, dst: Tensor = dst) -> tuple[Tensor, tuple[Tensor, Tensor]]:
            new_src, new_dst = slot[0][src], slot[0][dst]  # is an edge left? (and the ends for the next round)
            return (new_src != new_dst).any(), (new_src, new_dst)

        merged = merge_slots(best[None], target[None], ids[None, :C], budget, relabel)
        if merged.merges == 0:
            break
        more, (src, dst) = merged.also
        taken_weights.append(merged.taken[0])
        comp, C = merged.slot[0][comp], merged.count
        budget = None if budget is None else budget - merged.merges
        if not more:
            break
    weights = torch.cat(taken_weights) if taken_weights else torch.full((1,), NONE, device=w.device)
    return comp, weights, C


def tiled_boruvka(upper_rows: Rows, size: int) -> tuple[Tensor, Tensor, int]:
    """Maximum spanning tree of the whole graph whose similarity table's upper triangle `upper_rows` gives, in the
    row tiles of `graph.upper_tiles` (so every pair has the bits the edge lists read): one pass per round."""
    first = upper_rows(0, 1)  # the working precision and device: weights keep it, so cuts compare exact values
    ids = torch.arange(size, device=first.device)
    comp, C = ids, size
    taken_weights = []
    while True:
        node_w, node_t = _best_outgoing(upper_rows, size, comp, C, first.dtype)  # (M,) each
        best = node_w.new_full((C,), NONE).scatter_reduce_(0, comp, node_w, "amax")  # (C,)
        # members holding their component's best offer their target (C where they have no edge), the lowest wins
        offer = node_t.masked_fill(node_w != best[comp], C)
        target = torch.full((C,), C, device=comp.device).scatter_reduce_(0, comp, offer, "amin")  # (C,)
        merged = merge_slots(best[None], target[None], ids[None, :C])
        if merged.merges == 0:
            break
        taken_weights.append(merged.taken[0])
        comp, C = merged.slot[0][comp], merged.count
    weights = torch.cat(taken_weights) if taken_weights else torch.full((1,), NONE, device=first.device)
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
        row_t = cols[None, :].masked_fill(sim != row_w[:, None], C).amin(dim=1)
        col_w = sim.amax(dim=0)  # (M - start,) for nodes start .. M, partners i < j in this tile
        col_t = rows[:, None].masked_fill(sim != col_w[None, :], C).amin(dim=0)
        _keep_best(weight[start:stop], target[start:stop], row_w, row_t)
        _keep_best(weight[start:], target[start:], col_w, col_t)
    return weight, target.masked_fill(weight == NONE, C)


def _keep_best(weight: Tensor, target: Tensor, new_weight: Tensor, new_target: Tensor) -> None:
    """In place: take the new candidate where it is stronger, the lower target where it ties."""
    tie_target = torch.where(new_weight == weight, torch.minimum(target, new_target), target)
    target.copy_(torch.where(new_weight > weight, new_target, tie_target))
    weight.copy_(torch.maximum(weight, new_weight))
