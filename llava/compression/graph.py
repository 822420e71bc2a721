"""Graph primitives behind SCC: cosine similarity, Boruvka spanning forests, connected components.

Connected components of the thresholded similarity graph {(i, j): cos(i, j) > tau} are exactly the components
of a maximum spanning forest restricted to edges > tau (cycle property of spanning trees). So one routine
serves both budget modes:
- tau mode: Boruvka on the edges > tau; its final components ARE the SCC partition.
- ratio mode: Boruvka on all edges gives the single-linkage tree's weights; the K-part cut is the partition at
  the threshold between the right two weights (plus a tie-break when weights are exactly equal).

Similarity tables are assumed symmetric (cos(i, j) == cos(j, i) bit for bit, as dense matmuls of X @ X.T give).
Boruvka runs on the dense [B, C, C] similarity table, contracted after every round to the strongest edge
between each pair of components, so the work shrinks geometrically: a few passes over [M, M] in total,
O(log M) Python iterations, no per-node loops. Each component picks its strongest outgoing edge, ties to the
lowest component slot, which makes every round cycle-free and the result the same on every device.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

_NONE = float("-inf")  # "no edge" in a similarity table


def unit(x: Tensor) -> Tensor:
    """L2-normalise the last dim in x's dtype (the caller picks the working precision). Zero vectors stay
    zero: similarity 0 with every token, themselves included."""
    return x / x.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)


def similarity(x_unit: Tensor) -> Tensor:
    """[B, M, D] unit vectors -> [B, M, M] cosine similarity (their dtype) clamped to [-1, 1]."""
    return (x_unit @ x_unit.transpose(-1, -2)).clamp_(-1.0, 1.0)



def union_labels(num_nodes: int, u: Tensor, v: Tensor) -> Tensor:
    """Connected components of the edge list (u, v) over `num_nodes` nodes -> [num_nodes] label = the smallest
    node index in each component. Min-label hooking plus pointer jumping: O(log n) rounds of O(E + n) work."""
    labels = torch.arange(num_nodes, device=u.device)
    while u.numel():
        lu, lv = labels[u], labels[v]
        low = torch.minimum(lu, lv)
        hooked = labels.scatter_reduce(0, lu, low, "amin").scatter_reduce_(0, lv, low, "amin")
        hooked = _compress_paths(hooked)
        if torch.equal(hooked, labels):
            break
        labels = hooked
    return labels


def _compress_paths(parent: Tensor) -> Tensor:
    """Pointer jumping until every node points at its root."""
    while True:
        grand = parent[parent]
        if torch.equal(grand, parent):
            return parent
        parent = grand


@dataclass
class Forest:
    """What Boruvka found on B independent graphs of M nodes each.

    labels: [B, M] component of each node (dense per graph: 0 .. count-1, in no particular order).
    degree: [B, M] int32 number of edges of each node in the input table (self excluded); zeros unless asked.
    edge_weight: [E] similarity of every forest edge taken (all graphs together).
    """

    labels: Tensor
    degree: Tensor
    edge_weight: Tensor


def boruvka(table: Tensor, max_merges: int | None = None, with_degree: bool = False) -> Forest:
    """Maximum spanning forest of each graph in `table` [B, M, M] (symmetric similarities; -inf = no edge).

    The table's diagonal is overwritten (set to -inf), other entries are kept. Components left without an
    outgoing edge are final: they get their label and leave the table, so sparse graphs (high tau: mostly
    singletons) shrink to a small table after one round. With `max_merges` (B == 1 only), at most that many
    edges are taken, strongest first; any subset of one round's edges is a forest, so each taken edge removes
    exactly one component. `with_degree` also counts each node's edges (one more pass over the first table).
    """
    B, M, _ = table.shape
    device = table.device
    table.diagonal(dim1=1, dim2=2).fill_(_NONE)
    comp = torch.arange(M, device=device).expand(B, M).contiguous()  # (B, M) node -> slot; C = retired
    labels = torch.full((B, M), -1, dtype=torch.long, device=device)  # (B, M) final label, -1 = not yet
    counts = torch.zeros(B, dtype=torch.long, device=device)  # (B,) labels handed out per graph
    valid = torch.ones(B, M, dtype=torch.bool, device=device)  # (B, C) slot holds a live component
    degree = None
    taken_weight = []
    budget = max_merges
    while True:
        live = table.amax(dim=-1) > _NONE  # (B, C) components with an outgoing edge
        out_of_budget = budget is not None and budget <= 0
        _retire(valid & ~live if not out_of_budget else valid, comp, labels, counts)
        valid = valid & live
        if out_of_budget or not bool(valid.any()):
            break
        if B == 1 and 10 * int(valid.sum()) < 9 * valid.shape[1]:  # many finished: shrink the table first
            table, comp, valid = _compact(table, comp, valid)
        if with_degree and degree is None:  # first round: slots are still single nodes
            degree = _node_values((table > _NONE).view(torch.uint8).sum(dim=-1, dtype=torch.int32), comp)
        weight, target = table.max(dim=-1)  # (B, C) strongest edge leaving each component, ties -> lowest slot
        slots = torch.arange(weight.shape[1], device=device)
        mutual = target.gather(1, target) == slots  # both ends chose the same edge: keep it once
        batch, src = (valid & ~(mutual & (slots > target))).nonzero(as_tuple=True)  # (E,) by (graph, slot)
        dst, w = target[batch, src], weight[batch, src]
        if budget is not None:
            batch, src, dst, w = _strongest(budget, batch, src, dst, w)
            budget -= w.numel()
        taken_weight.append(w)
        C = weight.shape[1]
        merged = union_labels(B * C, batch * C + src, batch * C + dst).view(B, C)
        slot, valid = _relabel(merged, valid)  # (B, C) new slot of each old slot, retired -> C'
        new_c = valid.shape[1]
        comp = torch.cat([slot, slot.new_full((B, 1), new_c)], dim=1).gather(1, comp)
        table = contract(table, slot, new_c)
    return Forest(
        labels=labels,
        degree=degree if degree is not None else torch.zeros(B, M, dtype=torch.int32, device=device),
        edge_weight=torch.cat(taken_weight) if taken_weight else torch.zeros(0, device=device),
    )


def _node_values(per_slot: Tensor, comp: Tensor) -> Tensor:
    """Per-slot values [B, C] -> per-node values [B, M] (0 for nodes in the retired slot C)."""
    padded = torch.cat([per_slot, per_slot.new_zeros(per_slot.shape[0], 1)], dim=1)  # (B, C + 1)
    return padded.gather(1, comp)


def _compact(table: Tensor, comp: Tensor, valid: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Keep only the live slots of a single graph's table: [1, C, C] -> [1, L, L] and remap slot ids."""
    C = table.shape[-1]
    keep = valid[0].nonzero()[:, 0]  # (L,) live slots; an edge's both ends are live
    L = keep.numel()
    remap = torch.full((C + 1,), L, dtype=torch.long, device=table.device)  # finished slots -> retired (L)
    remap[keep] = torch.arange(L, device=table.device)
    table = table[0].index_select(0, keep).index_select(1, keep)[None]  # (1, L, L)
    return table, remap[comp], valid[:, keep]


def _retire(done: Tensor, comp: Tensor, labels: Tensor, counts: Tensor) -> None:
    """Give the components in slots `done` [B, C] their final labels (in place on labels [B, M], counts [B])."""
    if not bool(done.any()):
        return
    B, C = done.shape
    label_of_slot = torch.where(done, counts[:, None] + done.cumsum(dim=1) - 1, -1)  # (B, C)
    label_of_slot = torch.cat([label_of_slot, label_of_slot.new_full((B, 1), -1)], dim=1)  # retired slot C
    new = label_of_slot.gather(1, comp)  # (B, M)
    labels.copy_(torch.where(new >= 0, new, labels))
    counts.add_(done.sum(dim=1))


def _strongest(k: int, *edges: Tensor) -> tuple[Tensor, ...]:
    """Keep the k strongest edges (weight is the last tensor; ties keep the earlier edge)."""
    weight = edges[-1]
    if weight.numel() <= k:
        return edges
    order = torch.sort(weight, descending=True, stable=True).indices[:k]
    return tuple(e[order] for e in edges)


def _relabel(merged: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
    """Merged labels [B, C] (global node ids) -> new dense slot of each old slot [B, C], new validity [B, C']."""
    B, C = merged.shape
    local = merged - torch.arange(B, device=merged.device)[:, None] * C  # (B, C) labels never cross graphs
    root = (local == torch.arange(C, device=merged.device)) & valid  # (B, C)
    rank = root.cumsum(dim=1) - 1  # (B, C) new slot of each root
    counts = root.sum(dim=1)  # (B,)
    new_c = int(counts.max())
    slot = torch.where(valid, rank.gather(1, local), new_c)  # empty slots go to a scratch slot, cut off below
    new_valid = torch.arange(new_c, device=merged.device) < counts[:, None]  # (B, C')
    return slot, new_valid


def contract(table: Tensor, slot: Tensor, new_c: int) -> Tensor:
    """[B, C, C] symmetric similarities -> [B, C', C'] strongest edge between each pair of groups; slot [B, C]
    gives each node's group in [0, C'] (group C' is scratch and dropped).

    Two grouped row-maxima (index_reduce_, ~10x faster than scatter_reduce_ here): rows, then the rows of the
    transpose, which by symmetry are the columns.
    """
    B, C, _ = table.shape
    n = new_c + 1
    group = (slot + torch.arange(B, device=slot.device)[:, None] * n).view(B * C)  # (B*C,) global group id
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="index_reduce", category=UserWarning)
        rows = table.new_full((B * n, C), _NONE).index_reduce_(0, group, table.reshape(B * C, C), "amax")
        cols = rows.view(B, n, C).transpose(1, 2).reshape(B * C, n)  # (B*C, n)
        out = table.new_full((B * n, n), _NONE).index_reduce_(0, group, cols, "amax").view(B, n, n)
    out = out[:, :new_c, :new_c]
    out.diagonal(dim1=1, dim2=2).fill_(_NONE)  # edges inside a component are no longer candidates
    return out


def tiled_boruvka(
    x_unit: Tensor,
    above: float | None = None,
    sampled: Tensor | None = None,
    start: Tensor | None = None,
    max_merges: int | None = None,
    with_degree: bool = False,
    tile_elements: int = 1 << 24,
) -> Forest:
    """`boruvka` for one graph too large to hold as a table: similarities of x_unit [M, D] (unit rows) are
    recomputed in row tiles of at most `tile_elements` entries every round, so memory stays O(tile x M).

    above: only edges with similarity > above; sampled [M] bool: only edges touching a sampled node (the
    paper's approximate components); start [M]: initial dense component labels (merge further from there).
    Same choices as the dense version (strongest edge per component, ties to the lowest target component), so
    the same forest; each round costs one similarity pass over the rows of components that can still merge.
    `with_degree` counts edges > above per node in the full graph (before `sampled`), self excluded.
    """
    M = x_unit.shape[0]
    device = x_unit.device
    comp = torch.arange(M, device=device) if start is None else start.clone()  # (M,) node -> component
    C = int(comp.max()) + 1
    live = torch.ones(C, dtype=torch.bool, device=device)  # (C,) components that may still merge
    degree = torch.zeros(M, dtype=torch.int32, device=device) if with_degree else None
    taken, budget = [], max_merges
    rows = max(1, tile_elements // M)
    count_degree = with_degree  # degrees come from the first round, when components are single nodes
    while budget is None or budget > 0:
        node_w, node_t = _best_outgoing(x_unit, comp, C, live[comp], above, sampled, rows,
                                        degree if count_degree else None)
        count_degree = False
        comp_w = node_w.new_full((C,), _NONE).scatter_reduce_(0, comp, node_w, "amax")  # (C,)
        best = (node_w == comp_w[comp]) & (node_w > _NONE)  # (M,) members holding their component's best
        comp_t = torch.full((C,), C, device=device).scatter_reduce_(0, comp[best], node_t[best], "amin")
        live = comp_w > _NONE
        if not bool(live.any()):
            break
        src = live.nonzero()[:, 0]  # (E,)
        dst, w = comp_t[src], comp_w[src]
        keep = ~((comp_t[dst] == src) & (src > dst))  # mutual choices count once
        src, dst, w = src[keep], dst[keep], w[keep]
        if budget is not None:
            src, dst, w = _strongest(budget, src, dst, w)
            budget -= w.numel()
        taken.append(w)
        merged = union_labels(C, src, dst)  # (C,) smallest component id of each merged group
        root = merged == torch.arange(C, device=device)
        new_id = (root.cumsum(0) - 1)[merged]  # (C,) dense new id
        C = int(root.sum())
        live = torch.zeros(C, dtype=torch.bool, device=device).scatter_reduce_(0, new_id, live, "amax")
        comp = new_id[comp]
    return Forest(
        labels=comp[None],
        degree=(degree if degree is not None else torch.zeros(M, dtype=torch.int32, device=device))[None],
        edge_weight=torch.cat(taken) if taken else torch.zeros(0, device=device),
    )


def _best_outgoing(
    x_unit: Tensor,
    comp: Tensor,
    C: int,
    rows_live: Tensor,
    above: float | None,
    sampled: Tensor | None,
    rows_per_tile: int,
    degree: Tensor | None,
) -> tuple[Tensor, Tensor]:
    """Per node: the strongest similarity to another component and that component (ties -> lowest id); -inf
    and C where there is none. Fills `degree` (edges per node, self excluded) when given."""
    M = x_unit.shape[0]
    node_w = torch.full((M,), _NONE, dtype=x_unit.dtype, device=x_unit.device)
    node_t = torch.full((M,), C, dtype=torch.long, device=x_unit.device)
    for chunk in rows_live.nonzero()[:, 0].split(rows_per_tile):  # (t,) node ids
        sim = (x_unit[chunk] @ x_unit.T).clamp_(-1.0, 1.0)  # (t, M)
        if above is not None:
            F.threshold_(sim, above, _NONE)
        if degree is not None:  # in the full graph (before sampling), self excluded
            self_edge = sim[torch.arange(chunk.numel(), device=sim.device), chunk] > _NONE
            degree[chunk] = (sim > _NONE).sum(dim=-1, dtype=torch.int32) - self_edge.int()
        if sampled is not None:
            sim.masked_fill_(~(sampled[chunk, None] | sampled[None, :]), _NONE)
        sim.masked_fill_(comp[chunk, None] == comp[None, :], _NONE)  # (t, M) inside the component: no edge
        w = sim.amax(dim=-1)  # (t,)
        ties = torch.where(sim == w[:, None], comp[None, :], C)  # (t, M)
        node_w[chunk] = w
        node_t[chunk] = torch.where(w > _NONE, ties.amin(dim=-1), C)
    return node_w, node_t
