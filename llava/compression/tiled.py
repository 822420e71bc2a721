"""Boruvka for a temporal graph too large to hold as a table (long videos, ratio mode).

Similarities are recomputed in row tiles every round, so memory stays O(tile x M); each round costs one
similarity pass over the rows and one host read. Same choices as the dense `graph.boruvka` (strongest edge per
component, ties to the lowest target component), so the same forest.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .graph import NONE, Rows, forest_edges, merge_slots, tile_rows


def tiled_boruvka(
    rows: Rows,
    size: int,
    above: float | None = None,
    at_least: float | None = None,
    start: Tensor | None = None,
    count: int | None = None,
    max_merges: int | None = None,
) -> tuple[Tensor, Tensor, int]:
    """Maximum spanning forest of the graph whose similarity rows `rows` gives, over `size` nodes.

    above / at_least: only edges with similarity > above / >= at_least; start [size] with `count`: initial dense
    component labels (merge further from there); max_merges: at most that many edges, strongest first.
    Returns dense labels [size], the forest's edge weights (-inf padded) and the component count.
    """
    device = rows(0, 1).device
    comp = torch.arange(size, device=device) if start is None else start  # (M,) node -> component
    C = size if start is None else count
    taken_weights, budget = [], max_merges
    while budget is None or budget > 0:
        node_w, node_t = _best_outgoing(rows, size, comp, C, above, at_least)  # (M,) each
        comp_w = node_w.new_full((C,), NONE).scatter_reduce_(0, comp, node_w, "amax")  # (C,)
        holds_best = (node_w == comp_w[comp]) & (node_w > NONE)  # (M,) members holding their component's best
        comp_t = torch.full((C,), C, device=device).scatter_reduce_(
            0, comp, torch.where(holds_best, node_t, C), "amin")  # (C,) lowest target among those
        target = torch.where(comp_w > NONE, comp_t, torch.arange(C, device=device))  # (C,) self when no edge
        take = forest_edges(comp_w[None], target[None], budget)  # (1, C)
        slot, new_c, merges = merge_slots(take, target[None])
        if merges == 0:
            break
        taken_weights.append(torch.where(take[0], comp_w, NONE))
        comp, C = slot[0][comp], new_c
        budget = None if budget is None else budget - merges
    weights = torch.cat(taken_weights) if taken_weights else torch.full((1,), NONE, device=device)
    return comp, weights, C


def _best_outgoing(
    rows: Rows, size: int, comp: Tensor, C: int, above: float | None, at_least: float | None
) -> tuple[Tensor, Tensor]:
    """Per node: the strongest similarity to another component and that component (ties -> lowest id); -inf
    and C where there is none."""
    weights, targets = [], []
    step = tile_rows(size)
    for start in range(0, size, step):
        stop = min(size, start + step)
        sim = rows(start, stop).clone()  # (t, M) a copy: rows may be a view of a kept table
        if above is not None:
            sim.masked_fill_(sim <= above, NONE)
        if at_least is not None:
            sim.masked_fill_(sim < at_least, NONE)
        sim.masked_fill_(comp[start:stop, None] == comp[None, :], NONE)  # inside the component: no edge
        w = sim.amax(dim=-1)  # (t,)
        ties = torch.where(sim == w[:, None], comp[None, :], C).amin(dim=-1)  # (t,)
        weights.append(w)
        targets.append(torch.where(w > NONE, ties, C))
    return torch.cat(weights), torch.cat(targets)
