"""Boruvka for a temporal graph too large to hold as a table (long videos, ratio mode).

Two sources of each round's strongest edges, same choices as the dense `graph.boruvka` (strongest edge per
component, ties to the lowest target component), so the same forest:
- an edge list {sim > floor} kept from one tiled similarity pass (`graph.weighted_edges`): rounds cost O(edges) and
  no similarity is recomputed; exact for every tree edge above the floor, which is all the ratio search needs;
- the similarity rows themselves, recomputed in tiles every round (`tiled_boruvka`): the whole tree, one pass
  per round, for the rare cut below the floor.
Memory stays O(tile x M + edges) either way; each round costs one host read.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .graph import NONE, Rows, forest_edges, merge_slots, tile_rows

Outgoing = Callable[[Tensor, int], tuple[Tensor, Tensor]]  # (comp [M], C) -> strongest weight, target [C]


def edge_boruvka(
    u: Tensor, v: Tensor, w: Tensor, size: int,
    start: Tensor | None = None, count: int | None = None, max_merges: int | None = None,
) -> tuple[Tensor, Tensor, int]:
    """Maximum spanning forest of the edge list (u, v, w) over `size` nodes (-inf weights are no edges);
    start [size] with `count`: initial dense component labels; max_merges: at most that many edges, strongest
    first. Returns dense labels [size], the forest's edge weights (-inf padded) and the component count."""

    def outgoing(comp: Tensor, C: int) -> tuple[Tensor, Tensor]:
        cu, cv = comp[u], comp[v]  # (E,) each
        out = torch.where(cu != cv, w, NONE)  # edges inside a component are no longer candidates
        best = out.new_full((C,), NONE).scatter_reduce_(0, cu, out, "amax").scatter_reduce_(0, cv, out, "amax")
        at_best_u = (out == best[cu]) & (out > NONE)
        at_best_v = (out == best[cv]) & (out > NONE)
        target = torch.full((C,), C, device=w.device).scatter_reduce_(
            0, cu, torch.where(at_best_u, cv, C), "amin").scatter_reduce_(0, cv, torch.where(at_best_v, cu, C), "amin")
        return best, target

    return _rounds(outgoing, size, w.device, start, count, max_merges)


def tiled_boruvka(
    rows: Rows, size: int, start: Tensor | None = None, count: int | None = None, max_merges: int | None = None,
) -> tuple[Tensor, Tensor, int]:
    """Maximum spanning tree of the whole graph whose similarity rows `rows` gives: one pass per round."""

    def outgoing(comp: Tensor, C: int) -> tuple[Tensor, Tensor]:
        node_w, node_t = _best_outgoing(rows, size, comp, C)  # (M,) each
        best = node_w.new_full((C,), NONE).scatter_reduce_(0, comp, node_w, "amax")  # (C,)
        holds_best = (node_w == best[comp]) & (node_w > NONE)  # (M,) members holding their component's best
        target = torch.full((C,), C, device=comp.device).scatter_reduce_(
            0, comp, torch.where(holds_best, node_t, C), "amin")  # (C,) lowest target among those
        return best, target

    return _rounds(outgoing, size, rows(0, 1).device, start, count, max_merges)


def _rounds(
    outgoing: Outgoing, size: int, device: torch.device,
    start: Tensor | None, count: int | None, max_merges: int | None,
) -> tuple[Tensor, Tensor, int]:
    """Boruvka rounds given each component's strongest outgoing edge (weight, target component)."""
    comp = torch.arange(size, device=device) if start is None else start  # (M,) node -> component
    C = size if start is None else count
    taken_weights, budget = [], max_merges
    while budget is None or budget > 0:
        best, target = outgoing(comp, C)  # (C,) each
        target = torch.where(best > NONE, target, torch.arange(C, device=device))  # self when no edge
        take = forest_edges(best[None], target[None], budget)  # (1, C)
        slot, new_c, merges = merge_slots(take, target[None])
        if merges == 0:
            break
        taken_weights.append(torch.where(take[0], best, NONE))
        comp, C = slot[0][comp], new_c
        budget = None if budget is None else budget - merges
    weights = torch.cat(taken_weights) if taken_weights else torch.full((1,), NONE, device=device)
    return comp, weights, C


def _best_outgoing(rows: Rows, size: int, comp: Tensor, C: int) -> tuple[Tensor, Tensor]:
    """Per node: the strongest similarity to another component and that component (ties -> lowest id); -inf
    and C where there is none."""
    weights, targets = [], []
    step = tile_rows(size)
    for start in range(0, size, step):
        stop = min(size, start + step)
        sim = rows(start, stop).clone()  # (t, M) a copy: rows may be a view of a kept table
        sim.masked_fill_(comp[start:stop, None] == comp[None, :], NONE)  # inside the component: no edge
        w = sim.amax(dim=-1)  # (t,)
        ties = torch.where(sim == w[:, None], comp[None, :], C).amin(dim=-1)  # (t,)
        weights.append(w)
        targets.append(torch.where(w > NONE, ties, C))
    return torch.cat(weights), torch.cat(targets)
