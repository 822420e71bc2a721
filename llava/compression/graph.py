"""Graph primitives behind SCC: cosine similarity, thresholded edge lists, connected components, and Boruvka
maximum spanning forests for the single-linkage cut.

Written for accelerators: every loop runs a fixed number of whole-tensor steps between host reads, and each
host read (a round trip that stalls the launch queue) fetches what the next step needs in one go. Per-frame
graphs are small dense tables: their components come straight off the thresholded table, their single-linkage
tree's weights from Boruvka on the table, contracted after every round (one host read per round), until at most
32 slots are left, then from a (max, min) closure of what is left (no rounds). The temporal graph is
read as row tiles of its similarity table's upper triangle, so memory stays O(tile x M) however long the video:
one pass gives the edge list {sim > floor}, whose components are SCC at any threshold above the floor and
whose Boruvka forest (temporal_forest.py) is the single-linkage tree above it.

Connected components of the thresholded graph are exactly the components of a maximum spanning forest
restricted to edges > tau (cycle property), so the single-linkage cut at a threshold IS SCC at that tau.

Every pair's similarity is read from one place, so a threshold read off the spanning tree cuts exactly where it
should (a matmul does not promise sim[i, j] == sim[j, i] bit for bit: blocked kernels sum in different orders,
and on AVX2 CPUs and GPUs the two sides can differ in the last bit). Temporal passes read the upper triangle
only (j >= i), which also skips most of the lower half's matmul; per-frame tables are made symmetric.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

NONE = float("-inf")  # "no edge" in a similarity table
_ROUNDS_PER_CHECK = 4  # label-propagation rounds between host reads (the graphs here converge in 2-4)
_JUMPS_PER_CHECK = 3  # Boruvka pointer jumps between host reads (its merge forests are shallow)
_TILE_ELEMENTS = 1 << 25  # similarity entries per row tile (128 MB in float32)
_UPPER_TILE_ROWS = 2048  # an upper-triangle pass splits its rows into tiles of at most this many ...
_UPPER_TILES = 4  # ... and at most this many tiles (n tiles: (n + 1) / 2n of X @ X.T's FLOPs, ~10 launches each)
_CLOSURE_SLOTS = 32  # per-frame spanning trees finish by closure at this many slots or fewer (B x 32^3 entries)
_EDGE_SHARE = 16  # edge buffers hold up to 1/16 of a tile's entries (floored ratio-mode graphs reach ~2%)

Rows = Callable[[int, int], Tensor]  # (start, stop) -> similarity rows [stop - start, M] (or their upper part)


def unit(x: Tensor) -> Tensor:
    """L2-normalise the last dim in x's dtype (the caller picks the working precision). Zero vectors stay
    zero: similarity 0 with every token, themselves included."""
    return x / x.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)


def symmetric_similarity(x_unit: Tensor) -> Tensor:
    """[B, M, D] unit vectors -> [B, M, M] cosine similarity (their dtype) clamped to [-1, 1], symmetric bit for
    bit (see the module docstring): both sides averaged (a + b == b + a), which moves values by at most one ulp.
    For the small per-frame tables."""
    sim = x_unit @ x_unit.transpose(-1, -2)  # (B, M, M)
    return (sim + sim.transpose(-1, -2)).mul_(0.5).clamp_(-1.0, 1.0)


def tile_rows(num_columns: int) -> int:
    """Rows per similarity tile so that a tile holds about _TILE_ELEMENTS entries."""
    return max(1, _TILE_ELEMENTS // max(1, num_columns))


def upper_tiles(size: int) -> list[tuple[int, int]]:
    """(start, stop) row tiles of a pass over the upper triangle of a [size, size] table. Splitting saves FLOPs
    (the part below the diagonal is skipped) and costs launches, so small tables stay whole and large ones take
    up to _UPPER_TILES tiles, more only to keep a tile within _TILE_ELEMENTS entries. Every pass over one graph
    uses these tiles, so each pair's similarity comes out of the same matmul, with the same bits, every time."""
    tiles = min(_UPPER_TILES, -(-size // _UPPER_TILE_ROWS))
    step = min(tile_rows(size), -(-size // tiles))
    return [(start, min(size, start + step)) for start in range(0, size, step)]


def read_floats(values: Tensor) -> list[float]:
    """Several numbers [n] in one host read: one device -> host copy (float64 holds every similarity and count
    exactly)."""
    return values.to("cpu", torch.float64, copy=True).tolist()


# ----------------------------------------------------------------------------------------- components
def components(num_nodes: int, u: Tensor, v: Tensor) -> tuple[Tensor, int]:
    """Connected components of the edge list (u, v) (one direction per edge suffices; self loops are no-ops).

    Returns component ids [num_nodes] in 0 .. count-1, numbered in the order of their smallest members, and
    the count. Min-label hooking: every round, each edge lowers the label of the larger label's node to the
    smaller label (scatter amin), then labels jump twice to their labels' labels (two jumps keep the temporal
    graphs' frame-to-frame chains within one check).
    """
    if u.numel() == 0:
        return torch.arange(num_nodes, device=u.device), num_nodes

    def hook(labels: Tensor) -> Tensor:
        lu, lv = labels[u], labels[v]  # (E,) each
        low = torch.minimum(lu, lv)
        return labels.scatter_reduce(0, lu, low, "amin").scatter_reduce_(0, lv, low, "amin")

    labels, count, _ = _propagate(hook, torch.arange(num_nodes, device=u.device))
    return labels, count


Also = Callable[[Tensor, Tensor], Tensor]  # (labels [n]: each node's smallest member, roots [n] bool) -> 0-d count


def frame_components(adjacency: Tensor, also: Also | None = None) -> tuple[Tensor, int, int]:
    """Connected components of every graph in a batch of small dense adjacency matrices [B, M, M] (symmetric bool),
    as one graph of B*M nodes with no edges between the graphs; ids and count as `components` gives them, and
    `also` (a count the caller wants about the components; 0 without one) from the same host read.

    Read straight off the matrices (no edge list: no data-dependent shapes, no host read to build one): every
    round each node takes the smallest label among itself and its neighbours, its root takes the smallest of
    those among its members, then labels jump twice.
    """
    B, M, _ = adjacency.shape
    none, apart = B * M, ~adjacency  # a label larger than every label; the pairs without an edge

    def pull(labels: Tensor) -> Tensor:
        low = torch.minimum(labels, labels.view(B, 1, M).masked_fill(apart, none).amin(dim=-1).view(B * M))
        return low.scatter_reduce(0, labels, low, "amin")  # hook: each root takes its members' smallest

    return _propagate(pull, torch.arange(B * M, device=adjacency.device), also)


def _propagate(round_: Callable[[Tensor], Tensor], nodes: Tensor, also: Also | None = None) -> tuple[Tensor, int, int]:
    """Min-label propagation: `round_` lowers labels (each stays an id inside its node's component), pointer
    jumps follow it, and every _ROUNDS_PER_CHECK rounds one host read asks whether the last round changed
    anything. A round that changes nothing leaves both ends of every edge with one label, the smallest member's
    id (labels only decrease and never leave their component); those labels are then numbered 0 .. count-1.
    `also` is asked at every check, so its answer for the final labels comes with the read that ends the loop."""
    labels = nodes
    while True:
        for _ in range(_ROUNDS_PER_CHECK):
            previous, labels = labels, round_(labels)
            labels = labels[labels]  # pointer jumps
            labels = labels[labels]
        roots = labels == nodes  # (n,) each component's smallest member
        facts = [roots.sum(), (labels != previous).any()] + ([] if also is None else [also(labels, roots)])
        values = read_floats(torch.stack(facts))  # count, changed(, also): one round trip
        if not values[1]:
            return (roots.cumsum(0) - 1)[labels], int(values[0]), 0 if also is None else int(values[2])


def weighted_edges(
    upper_rows: Rows, size: int, floor: float, rows: int | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One pass over the row tiles of a similarity table's upper triangle (`upper_rows(start, stop)` gives
    columns start .. M of those rows): edges (u < v) with similarity > floor, their weights, and the diagonal.
    With `rows`, only the pairs in the first `rows` rows (the diagonal [rows]; else [M]).

    Each tile's edges go into a fixed-size buffer (nonzero_static: no host read) of 1/_EDGE_SHARE of its
    entries; one host read for the whole pass gives the tiles' edge counts (so whether a buffer overflowed). The edges
    are then gathered in their order (the found slots' positions from one more nonzero_static: linear, where a
    sort over the buffers cost more than the similarity pass on long videos).
    Graphs denser than that (rare at useful taus) are read again exactly, one read per tile."""
    rows = size if rows is None else rows
    tiles = [(start, min(stop, rows)) for start, stop in upper_tiles(size) if start < rows]
    if not tiles:  # no rows read: no edges
        nothing = upper_rows(0, 0).reshape(0)
        index = torch.zeros(0, dtype=torch.long, device=nothing.device)
        return index, index, nothing, nothing
    pairs, weights, counts, capacities, diagonal = [], [], [], [], []
    for start, stop in tiles:
        sim = upper_rows(start, stop)  # (t, M - start): column c is node start + c
        diagonal.append(sim.diagonal())
        upper = torch.triu(sim > floor, diagonal=1)  # (t, M - start)
        capacities.append(max(1, upper.numel() // _EDGE_SHARE))
        counts.append(torch.count_nonzero(upper))
        _tile_edges(sim, torch.nonzero_static(upper, size=capacities[-1], fill_value=-1), start, pairs, weights)
    counts = read_floats(torch.stack(counts))  # the pass's one host read: every tile's edge count
    if any(found > capacity for found, capacity in zip(counts, capacities, strict=True)):
        pairs, weights = [], []
        for start, stop in tiles:
            sim = upper_rows(start, stop)
            _tile_edges(sim, torch.triu(sim > floor, diagonal=1).nonzero(), start, pairs, weights)
    pairs, weights = (parts[0] if len(parts) == 1 else torch.cat(parts) for parts in (pairs, weights))
    found = torch.nonzero_static(weights > NONE, size=weights.numel())[: int(sum(counts)), 0]  # padding is -inf
    return pairs[found, 0], pairs[found, 1], weights[found], torch.cat(diagonal)


def _tile_edges(sim: Tensor, edges: Tensor, start: int, pairs: list[Tensor], weights: list[Tensor]) -> None:
    """Append a tile's local (row, column) pairs [E, 2] (-1 = padding) as global (u, v), both offset by the
    tile's start, and their weights (-inf for padding, which reads the tile's last entry and is masked out)."""
    weights.append(sim[edges[:, 0], edges[:, 1]].masked_fill(edges[:, 0] < 0, NONE))
    pairs.append(edges.add_(start) if start else edges)


def degrees(u: Tensor, v: Tensor, w: Tensor, diagonal: Tensor, tau: float) -> Tensor:
    """Row counts of sim > tau [size], self included, from an edge list holding every edge above tau."""
    above = (w > tau).int()
    return (diagonal > tau).int().index_add_(0, u, above).index_add_(0, v, above)


# ----------------------------------------------------------------------------------------- Boruvka
def boruvka(table: Tensor) -> Tensor:
    """Maximum spanning forest weights of each graph in `table` [B, M, M] (symmetric similarities; -inf = no
    edge): one per slot per round, then one per slot of the closure (at least B * M in all), -inf where a slot took
    no edge (sort descending to read them strongest first).

    Each round every component takes its strongest outgoing edge (ties to the lowest target, which keeps every
    round cycle-free), the components merge along those edges, and the table is contracted to the strongest
    edge between each pair of new components, so the work shrinks geometrically: at most half the slots stay.
    Once a graph has at most _CLOSURE_SLOTS slots, `closure_weights` finishes it without more rounds. The table
    is overwritten.
    """
    B, M, _ = table.shape
    table.diagonal(dim1=1, dim2=2).fill_(NONE)
    ids, graphs = torch.arange(M, device=table.device), torch.arange(B, device=table.device)[:, None]
    taken_weights = []
    while table.shape[1] > _CLOSURE_SLOTS:
        slots = ids[: table.shape[1]].expand(B, -1)  # (B, C)
        weight, target = table.max(dim=-1)  # (B, C) strongest edge leaving each component, ties -> lowest slot
        merged = merge_slots(weight, target, slots)
        if merged.merges == 0:
            return torch.cat([*taken_weights, table.new_full((1,), NONE)])
        taken_weights.append(merged.taken.view(-1))
        table = contract(table, merged.slot.add(graphs, alpha=merged.count), merged.count)
    return torch.cat([*taken_weights, closure_weights(table).view(-1)])


def closure_weights(table: Tensor) -> Tensor:
    """Maximum spanning forest weights [B, C] of small tables [B, C, C] (-inf = no edge; -inf padded), with no
    rounds and no host read. Squaring the table in (max, min) ceil(log2(C - 1)) times gives U[i, j], the
    strongest bottleneck over all paths i -> j; slot j then joins slots 0 .. j-1 at max_{i<j} U[i, j]. Those
    levels are the tree's weights: at every threshold both count the components above it (a component's
    smallest slot is the one that joins no earlier slot). Holds B x C^3 entries per squaring. The table is
    overwritten."""
    B, C, _ = table.shape
    table.diagonal(dim1=1, dim2=2).fill_(float("inf"))  # a path may stay where it is
    for _ in range(max(C - 2, 0).bit_length()):  # paths of up to 2^steps >= C - 1 edges
        table = torch.minimum(table[:, :, :, None], table[:, None, :, :]).amax(dim=2)  # (B, i, m, j) -> (B, i, j)
    earlier = torch.ones(C, C, dtype=torch.bool, device=table.device).tril_()  # i >= j: not an earlier slot
    return table.masked_fill(earlier, NONE).amax(dim=1)  # (B, C): slot 0 joins nothing (-inf)


def forest_parent(weight: Tensor, target: Tensor, slots: Tensor, budget: int | None = None) -> Tensor:
    """[B, C]: the slot each slot merges into along its chosen edge (weight [B, C], -inf for none, to `target`),
    itself where it takes no edge. Both ends of a mutual choice picked the same edge: only the lower slot takes
    it. With a budget, only the `budget` strongest edges are taken (ties to the lower slot): any subset of a
    round's edges is a forest, so each taken edge removes exactly one component."""
    parent = torch.where(weight > NONE, target, slots)  # (B, C)
    twin = parent.gather(1, parent) == slots  # a mutual choice (or a root)
    parent = torch.where(twin, torch.maximum(parent, slots), parent)  # the upper twin becomes the root
    if budget is None:
        return parent
    order = torch.sort(weight.masked_fill(parent == slots, NONE).view(-1), descending=True, stable=True).indices
    rank = torch.empty_like(order).scatter_(0, order, torch.arange(order.numel(), device=order.device))
    return torch.where((rank < budget).view(parent.shape), parent, slots)


AfterMerge = Callable[[Tensor], tuple[Tensor, object]]  # new slots [B, C] -> (0-d answer, payload)


class Merged(NamedTuple):
    """One Boruvka round's merge: the new dense slot of every old slot [B, C] (roots numbered in slot order), the
    new slot count (the most components any graph keeps), the number of merges, the weights of the edges taken
    [B, C] (-inf where a slot took none), and what `also` answered (its value and payload; None without one)."""

    slot: Tensor
    count: int
    merges: int
    taken: Tensor
    also: tuple[float, object] | None


def merge_slots(
    weight: Tensor, target: Tensor, slots: Tensor, budget: int | None = None, also: AfterMerge | None = None,
) -> Merged:
    """Merge each slot along its chosen edge (weight [B, C], -inf for none, to `target`; `forest_parent` decides
    which edges are taken). `also(new slots)` gives a 0-d answer read with the rest in one host read (more only for
    a merge forest deeper than 2^_JUMPS_PER_CHECK), and a payload handed back with it."""
    parent = forest_parent(weight, target, slots, budget)
    taken = weight.masked_fill(parent == slots, NONE)
    B, C = parent.shape
    while True:
        for _ in range(_JUMPS_PER_CHECK):
            parent = parent.gather(1, parent)
        root = parent == slots  # (B, C)
        slot = (root.cumsum(dim=1) - 1).gather(1, parent)  # (B, C)
        facts = [root.sum(dim=1), root.gather(1, parent).all().view(1)]  # roots per graph, flat forest
        if also is not None:
            answer, payload = also(slot)
            facts.append(answer.view(1))
        values = read_floats(torch.cat(facts))
        if values[B]:
            roots = values[:B]
            answered = None if also is None else (values[B + 1], payload)
            return Merged(slot, int(max(roots)), B * C - int(sum(roots)), taken, answered)


def contract(table: Tensor, group: Tensor, new_c: int) -> Tensor:
    """[B, C, C] symmetric similarities -> [B, C', C'] strongest edge between each pair of groups; group [B, C]
    gives each row's group in [0, C') offset by C' per graph (graph b's groups are b * C' .. b * C' + C' - 1).

    Two grouped row-maxima (index_reduce_, ~10x faster than scatter_reduce_ here): rows, then the rows of the
    transpose, which by symmetry are the columns.
    """
    B, C, _ = table.shape
    group = group.view(B * C)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="index_reduce", category=UserWarning)
        rows = table.new_full((B * new_c, C), NONE).index_reduce_(0, group, table.reshape(B * C, C), "amax")
        cols = rows.view(B, new_c, C).transpose(1, 2).reshape(B * C, new_c)  # (B*C, C')
        out = table.new_full((B * new_c, new_c), NONE).index_reduce_(0, group, cols, "amax")
    out = out.view(B, new_c, new_c)
    out.diagonal(dim1=1, dim2=2).fill_(NONE)  # edges inside a component are no longer candidates
    return out
