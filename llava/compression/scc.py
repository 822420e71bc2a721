"""LLaVA-Scissor's Semantic Connected Components compression (arXiv 2506.21862, Sec. 3 and Appendix C).

SCC(X, tau): link tokens whose cosine similarity is > tau; each connected component becomes the mean of its
members; components are ordered by the index of their highest-degree member (degree counts the self edge; ties
to the lower index). The spatial step runs SCC on every frame, the temporal step on all spatial outputs
concatenated in frame order; the merge step (merge.py) then folds every original token into its most similar
kept token.

Two budget modes:
- tau: the paper's mode; the token count varies per video. Each step thresholds its similarities once: the
  spatial step each frame's small table, the temporal step one pass over its upper triangle in row tiles that
  keeps the edges above tau; then connected components.
- retention ratio: exactly K tokens. The spatial and temporal steps share one threshold in the paper, so we
  search for the spatial threshold at which the temporal step needs (nearly) the same threshold to reach K,
  then cut the temporal single-linkage tree at exactly K parts. Both thresholds are reported.

Exact components by default; `epsilon` gives the paper's approximate components (sample
min(M, ceil(ln M / eps^2)) nodes per step and keep only edges touching a sampled node), seeded.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .graph import (
    NONE,
    boruvka,
    components,
    degrees,
    frame_components,
    read_floats,
    symmetric_similarity,
    unit,
    weighted_edges,
)
from .merge import accumulation_dtype, merge_into_kept, segment_sum
from .temporal_forest import edge_boruvka, tiled_boruvka

_SEARCH_PROBES = 3  # temporal passes the ratio mode may spend finding a common threshold
_GAP_DONE = 0.01  # spatial and temporal thresholds this close count as "the same tau"
_SEARCH_WINDOW = 0.05  # a probe's temporal tree is only built above tau_spatial - this
_REUSE_SHARE = 0.6  # a probe reuses an earlier probe's temporal edges when at most this share of its tokens is new


@dataclass
class SCCOutput:
    """tokens [K, D] in the working precision, assignment [N] into tokens, and what each step did."""

    tokens: Tensor
    assignment: Tensor
    tokens_spatial: int
    tau_spatial: float
    tau_temporal: float
    pool_shape: tuple[int, int, int] | None = None  # the (T', H', W') a pooling method pooled to


def ordered_means(x: Tensor, labels: Tensor, count: int, degree: Tensor) -> Tensor:
    """Component means in SCC order. x [N, D], labels [N] dense ids in [0, count), degree [N] -> [count, D].

    The order key of a component is the index of its highest-degree member (ties to the lower index), which
    keeps the output in spatial / temporal order as the authors' code does.
    """
    return _means(x, component_order(labels, count, degree), count)


def component_order(labels: Tensor, count: int, degree: Tensor) -> Tensor:
    """[N]: the output position of each node's component in SCC order (see `ordered_means`)."""
    N = labels.shape[0]
    score = degree.long() * N - torch.arange(N, device=labels.device)  # (N,) higher degree first, then lower index
    best = torch.full((count,), torch.iinfo(torch.long).min, device=labels.device).scatter_reduce_(
        0, labels, score, "amax")
    key = best.neg().remainder_(N)  # (C,) index of each component's highest-degree member
    rank = torch.empty_like(key).scatter_(0, torch.argsort(key), torch.arange(count, device=labels.device))  # (C,)
    return rank[labels]


def _means(x: Tensor, order: Tensor, count: int) -> Tensor:
    """[count, D]: the mean of the rows of x [N, D] at each output position `order` [N] gives."""
    wide = accumulation_dtype(x.dtype)  # fp16/bf16 means round once, as their torch.mean does
    sizes = torch.zeros(count, dtype=wide, device=x.device).index_add_(0, order, torch.ones_like(order, dtype=wide))
    sums = segment_sum(x.to(wide), order, count)  # (C, D)
    return sums.div_(sizes[:, None]).to(x.dtype)  # in place: no second [C, D] buffer


def sampled_nodes(B: int, M: int, epsilon: float, generator: torch.Generator, device: torch.device) -> Tensor:
    """[B * M] bool: per graph of M nodes, the min(M, ceil(ln M / eps^2)) nodes whose edges the approximate mode
    keeps."""
    n_sample = min(M, math.ceil(math.log(M) / epsilon**2)) if M > 1 else M
    ranks = torch.rand(B, M, generator=generator).argsort(dim=1).argsort(dim=1).to(device)  # (B, M)
    return (ranks < n_sample).view(B * M)


def _touching(sampled: Tensor | None, u: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """Edges touching a sampled node (the paper's approximate components); the others become self loops, so
    shapes never depend on the data."""
    if sampled is None:
        return u, v
    return torch.where(sampled[u] | sampled[v], u, v), v


def spatial_step(
    x: Tensor, sim: Tensor, tau: float, sampled: Tensor | None = None, earlier: tuple[Tensor, Tensor] | None = None,
) -> tuple[Tensor, Tensor, int]:
    """x [F, T, D], sim [F, T, T] (symmetric: an edge is one value) -> SCC tokens of every frame, concatenated in
    frame order [M', D], the token every node went into [F*T], and, given an earlier spatial step on the same
    table (`earlier`: its token of every node [F*T] and its tokens' member counts), how many tokens are not tokens
    of that step (else 0).

    All frames form one graph of F*T nodes without edges between frames, so one components call serves every
    frame, and the frame-major node index orders the output frame by frame. Partitions of one table at two
    thresholds are nested, so a component equals the earlier component holding its smallest member exactly when
    both have as many members.
    """
    F, T, D = x.shape
    adjacency = sim > tau  # (F, T, T)
    degree = adjacency.sum(dim=-1, dtype=torch.int32).view(F * T)  # self included
    if sampled is not None:  # keep the edges touching a sampled node
        chosen = sampled.view(F, T)
        adjacency &= chosen[:, :, None] | chosen[:, None, :]
    also = None
    if earlier is not None:
        earlier_of, earlier_members = earlier

        def also(labels: Tensor, roots: Tensor) -> Tensor:  # components whose earlier token differs
            return (roots & (_members(labels, F * T) != earlier_members[earlier_of])).sum()

    labels, count, new = frame_components(adjacency, also)
    order = component_order(labels, count, degree)
    return _means(x.view(F * T, D), order, count), order, new


def _members(ids: Tensor, size: int) -> Tensor:
    """[size]: how many entries of ids [N] (values in [0, size)) hold each value."""
    return torch.zeros(size, dtype=torch.long, device=ids.device).index_add_(0, ids, torch.ones_like(ids))


Edges = tuple[Tensor, Tensor, Tensor, Tensor]  # u, v, weights [E], diagonal [M']


@dataclass
class Reuse:
    """What a ratio-mode probe keeps from an earlier probe: its edge list {sim > floor} and, for each of the new
    graph's tokens, the index of the equal token in the earlier graph (-1 for the `new` tokens that have none).
    Spatial partitions at two thresholds are nested, so most tokens of nearby probes are equal."""

    edges: Edges
    floor: float
    same: Tensor  # (M',) long
    new: int


class TemporalGraph:
    """The temporal step's graph over the M' spatial tokens, read as row tiles of its similarity table (computed
    per tile, never held whole: memory O(tile x M') however long the video).

    Everything the temporal step asks, it asks of an edge list {sim > floor} from one pass over the upper
    triangle: components and degrees at a threshold, and the spanning forest above the floor (Boruvka on the
    edges) from which ratio mode reads its thresholds and cut. The last list is kept, so questions at or above
    its floor cost no second pass. Only a cut below every floor needs the whole tree (one pass per round).
    With `reuse`, the first list takes the pairs of equal tokens from the earlier probe's list and computes only
    the pairs that touch a new token; every later pass (only the whole-tree fallback asks for one) is fresh, so
    one graph never mixes values from two sources.
    """

    def __init__(self, tokens: Tensor, reuse: Reuse | None = None) -> None:
        self.size = tokens.shape[0]
        self.x_unit = unit(tokens)  # (M', D)
        self._edges: tuple[float, Edges] | None = None  # floor, (u, v, w, diag)
        self._reuse = reuse

    def upper_rows(self, start: int, stop: int) -> Tensor:
        """Similarities of rows start .. stop with columns start .. M' [stop - start, M' - start]; entries below
        the diagonal are not read."""
        return (self.x_unit[start:stop] @ self.x_unit[start:].T).clamp_(-1.0, 1.0)

    def edges(self, floor: float) -> Edges:
        """Every edge with similarity > floor (ends u, v, weights; -inf weights are no edge) and the diagonal
        [M']; one pass unless kept."""
        if self._edges is None or self._edges[0] > floor:
            reuse = self._reuse if self._reuse is not None and floor >= self._reuse.floor else None
            edges = weighted_edges(self.upper_rows, self.size, floor) if reuse is None else self._patch(reuse, floor)
            self._edges, self._reuse = (floor, edges), None
        return self._edges[1]

    def _patch(self, reuse: Reuse, floor: float) -> Edges:
        """The edge list above `floor` (>= reuse.floor) from the earlier list's pairs of equal tokens plus one pass
        over the rows of the new tokens: ordered new tokens first, those pairs are the upper triangle of the first
        `reuse.new` rows. Earlier pairs that no longer exist keep their slot as a -inf self loop (no edge), so
        building the list needs no host read beyond the pass's own. The ends of an edge come in either order."""
        order = torch.argsort(reuse.same, stable=True)  # (M',) new tokens (-1) first
        x_new_first = self.x_unit[order]

        def upper_rows(start: int, stop: int) -> Tensor:
            return (x_new_first[start:stop] @ x_new_first[start:].T).clamp_(-1.0, 1.0)

        fu, fv, fw, fresh_diagonal = weighted_edges(upper_rows, self.size, floor, reuse.new)
        u, v, w, diagonal = reuse.edges
        slot = torch.full((diagonal.shape[0] + 1,), -1, device=u.device).scatter_(
            0, reuse.same.masked_fill(reuse.same < 0, diagonal.shape[0]), torch.arange(self.size, device=u.device))
        cu, cv = slot[u], slot[v]  # (E,) each: the edge's ends in this graph, -1 where one is gone
        gone = (torch.minimum(cu, cv) < 0) | (w <= floor)
        diagonal = diagonal[reuse.same.clamp(min=0)].scatter_(0, order[: reuse.new], fresh_diagonal)
        return (torch.cat([order[fu], cu.masked_fill(gone, 0)]), torch.cat([order[fv], cv.masked_fill(gone, 0)]),
                torch.cat([fw, w.masked_fill(gone, NONE)]), diagonal)

    def components(self, tau: float, sampled: Tensor | None = None) -> tuple[Tensor, int, Tensor]:
        """SCC at tau: dense labels [M'], their count, and degrees [M'] (self included, full graph)."""
        u, v, w, diagonal = self.edges(tau)
        labels, count = components(self.size, *_touching(sampled, torch.where(w > tau, u, v), v))
        return labels, count, degrees(u, v, w, diagonal, tau)

    def tree_weights(self, floor: float | None = None) -> Tensor:
        """Single-linkage merge similarities (maximum spanning tree weights), strongest first, -inf padded;
        with `floor`, only those above it (the spanning forest of {sim > floor} holds exactly those)."""
        if floor is None:
            weights = tiled_boruvka(self.upper_rows, self.size)[1]
        else:
            u, v, w, _ = self.edges(floor)
            weights = edge_boruvka(u, v, w, self.size)[1]
        return torch.sort(weights, descending=True).values

    def merge_tied(self, labels: Tensor, count: int, merges: int, tau: float) -> tuple[Tensor, int]:
        """Merge `merges` more pairs of components (dense labels [M']) along edges of similarity exactly tau,
        the weakest level the single-linkage cut keeps (ties to the lower component). Returns labels, count."""
        below = float(torch.nextafter(torch.tensor(tau, dtype=self.x_unit.dtype),
                                      torch.tensor(NONE, dtype=self.x_unit.dtype)))
        u, v, w, _ = self.edges(below)  # every edge >= tau
        tied = w.masked_fill(w < tau, NONE)
        groups, _, new_count = edge_boruvka(u, v, tied, self.size, start=labels, count=count, max_merges=merges)
        return groups, new_count


def scc_tau(x: Tensor, tau: float, epsilon: float | None, seed: int) -> SCCOutput:
    """Paper mode: spatial SCC per frame, temporal SCC over the results, merge. x [F, T, D] in the working
    precision."""
    F, T, D = x.shape
    generator = torch.Generator().manual_seed(seed)
    x_unit = unit(x)  # (F, T, D)
    sampled = sampled_nodes(F, T, epsilon, generator, x.device) if epsilon else None  # (F*T,)
    spatial, _, _ = spatial_step(x, symmetric_similarity(x_unit), tau, sampled)  # (M', D)
    graph = TemporalGraph(spatial)
    sampled_t = sampled_nodes(1, graph.size, epsilon, generator, x.device) if epsilon else None
    labels, count, degree = graph.components(tau, sampled_t)
    kept = ordered_means(spatial, labels, count, degree)  # (K, D)
    tokens, assignment = merge_into_kept(x.view(F * T, D), kept, x_unit.view(F * T, D))
    return SCCOutput(tokens, assignment, spatial.shape[0], tau, tau)


def _tree_weights(sim: Tensor) -> Tensor:
    """Maximum spanning tree weights of each graph in a dense batch [B, M, M], strongest first, -inf padded."""
    return torch.sort(boruvka(sim.detach().clone()), descending=True).values


def _tau_keeping(weights: Tensor, num_nodes: int, count: int, floored: bool = False) -> float | None:
    """Largest threshold at which graphs with these tree weights keep >= `count` components in total; None when
    the answer lies below the weights of a floored tree."""
    cut = num_nodes - count  # tree edges that may stay above the threshold
    if cut < 0:
        return 1.0
    value = float(weights[cut]) if cut < weights.numel() else NONE  # -inf: the tree has no such edge
    if value > NONE:
        return value
    return None if floored else -1.0


def cut_tree(graph: TemporalGraph, weights: Tensor, k: int, tau: float | None = None) -> tuple[Tensor, Tensor, float]:
    """Partition the temporal graph into exactly k single-linkage clusters. Returns labels, degree, tau.

    The clusters are the components of {sim > tau} with tau the (M - k + 1)-th strongest tree weight (`tau`
    when the caller has read it already; None: read here, or the tree lies above it). When tree weights tie at
    tau that leaves more than k components; the missing merges are taken among the edges of similarity exactly
    tau (never weaker ones: that would not be a single-linkage cut), by a budgeted Boruvka.
    """
    if tau is None:
        tau = _tau_keeping(weights, graph.size, k, floored=True)
    if tau is None:  # the cut lies below the floored tree: find the whole tree
        tau = _tau_keeping(graph.tree_weights(), graph.size, k)
    labels, count, degree = graph.components(tau)
    if count > k:
        labels, count = graph.merge_tied(labels, count, count - k, tau)
    if count != k:
        raise RuntimeError(f"internal error: the single-linkage cut left {count} clusters instead of {k}")
    return labels, degree, tau


def scc_ratio(x: Tensor, k: int) -> SCCOutput:
    """Exactly k tokens. x [F, T, D] in the working precision.

    Find the spatial threshold tau_s at which the temporal step needs the same threshold tau_t to leave k parts,
    then cut the temporal tree at exactly k. The gap tau_t - tau_s falls as tau_s rises (more spatial tokens
    need more temporal merges, at a lower threshold), so one probe brackets the answer between its tau_s and
    its tau_t; the next probe goes where the spatial count is the geometric mean of the counts at the
    bracket's ends (the first: of k and N). Each probe costs one temporal similarity pass and one host read
    for what the search needs next; a probe near an earlier one reuses that probe's edges and computes only the
    pairs touching its new tokens (`_probe_graph`), which makes the last, refining probe cheap.
    """
    F, T, D = x.shape
    N = F * T
    x_unit = unit(x)  # (F, T, D)
    sim = symmetric_similarity(x_unit)  # (F, T, T): Boruvka and the edge lists read the same values
    spatial_weights = _tree_weights(sim)  # (N - F real weights, then -inf) over all frames
    low, high = k, N  # the bracket, as spatial counts
    tau_s = _tau_keeping(spatial_weights, N, round(math.sqrt(low * high)))
    best, probes = None, []
    for _ in range(_SEARCH_PROBES):
        earlier = min(probes, key=lambda probe: abs(probe.tau - tau_s), default=None)  # most tokens in common
        spatial, token_of, new = spatial_step(
            x, sim, tau_s, earlier=None if earlier is None else (earlier.token_of, earlier.members))
        members = _members(token_of, spatial.shape[0])  # (M',)
        window = tau_s - _SEARCH_WINDOW  # the search decides on this floor; the tree may be built above a higher one
        graph, floor = _probe_graph(spatial, token_of, members, new, window, earlier)
        weights_t = graph.tree_weights(floor)
        probes.append(_Probe(tau_s, floor, graph.edges(floor), token_of, members))
        tau_t, count_t, next_up, next_down = _probe_result(spatial_weights, N, weights_t, k, graph.size,
                                                           window, low, high)
        gap = -_SEARCH_WINDOW if tau_t is None else tau_t - tau_s
        if best is None or abs(gap) < abs(best[0]):
            best = (gap, tau_s, spatial, graph, weights_t, tau_t)
        if gap > 0:  # the answer lies in (tau_s, tau_t]: more spatial tokens, up to the count at tau_t
            low, high, tau_s = graph.size, min(high, count_t), next_up
        else:  # in [tau_t, tau_s), or below the window
            low, high, tau_s = max(low, count_t), graph.size, next_down
        if abs(gap) < _GAP_DONE or high - low <= 1:
            break
    _, tau_s, spatial, graph, weights_t, tau_t = best
    labels, degree, tau_t = cut_tree(graph, weights_t, k, tau_t)
    kept = ordered_means(spatial, labels, k, degree)  # (k, D)
    tokens, assignment = merge_into_kept(x.view(N, D), kept, x_unit.view(N, D))
    return SCCOutput(tokens, assignment, graph.size, tau_s, tau_t)


@dataclass
class _Probe:
    """What a later probe may reuse: the spatial threshold, the temporal edge list above `floor`, the token of
    every node [N] and each token's member count [M']."""

    tau: float
    floor: float
    edges: Edges
    token_of: Tensor
    members: Tensor


def _probe_graph(
    spatial: Tensor, token_of: Tensor, members: Tensor, new: int, floor: float, earlier: _Probe | None,
) -> tuple[TemporalGraph, float]:
    """The temporal graph of a probe's spatial tokens [M', D] (token_of [N]: each node's token; members [M']: each
    token's node count), reusing the earlier probe's edges when at most _REUSE_SHARE of the tokens are `new` (not
    tokens of that probe): the pass then costs about 2s - s^2 of a fresh one for a new share s. The floor is raised
    to the earlier probe's where it lay higher: the search has then moved below that probe, where fewer spatial
    tokens need fewer temporal merges, so the temporal threshold lies higher still. Returns the graph and the floor
    its tree is built above.
    """
    size = spatial.shape[0]
    if earlier is None or new > _REUSE_SHARE * size:
        return TemporalGraph(spatial), floor
    holder = torch.empty(size, dtype=torch.long, device=spatial.device).scatter_(0, token_of, earlier.token_of)
    same = holder.masked_fill(members != earlier.members[holder], -1)  # (M',)
    reuse = Reuse(earlier.edges, earlier.floor, same, new)
    return TemporalGraph(spatial, reuse), max(floor, earlier.floor)


def _probe_result(
    spatial_weights: Tensor, num_nodes: int, weights_t: Tensor, k: int, size: int, floor: float, low: int, high: int,
) -> tuple[float | None, int, float, float]:
    """What the search needs after a probe of `size` spatial tokens, in one host read: the temporal threshold
    leaving k parts (None when it lies below the floored tree), the spatial count at that threshold (at the floor
    for None), and the next probe's spatial threshold for either side of the bracket (up: between `size` and
    that count; down: between that count and `size`), each as `_tau_keeping` gives it."""
    tau_t = weights_t[size - k] if size - k < weights_t.numel() else weights_t.new_tensor(NONE)  # size >= k
    count_t = num_nodes - (spatial_weights > tau_t.masked_fill(tau_t == NONE, floor)).sum()  # 0-d
    bounds = torch.stack([count_t.clamp(max=high), count_t.clamp(min=low)])  # (2,) the bracket's ends
    counts = (size * bounds.double()).sqrt().round()  # spatial counts of the next probe, up and down
    thresholds = _threshold_keeping(spatial_weights, num_nodes, counts)  # (2,)
    values = read_floats(torch.cat([tau_t.view(1).double(), count_t.view(1), thresholds.double()]))
    return (None if values[0] == NONE else values[0]), int(values[1]), values[2], values[3]


def _threshold_keeping(weights: Tensor, num_nodes: int, counts: Tensor) -> Tensor:
    """`_tau_keeping` (unfloored) for counts [n] in [1, num_nodes] held on the device, without reading them. The
    weights hold a slot per node, so a cut indexes a real weight or -inf padding; the clamp keeps it inside them
    for tables with no edge at all, where `boruvka` returns a single -inf."""
    cut = (num_nodes - counts).long().clamp_(max=weights.numel() - 1)  # (n,) tree edges that may stay above it
    value = weights.index_select(0, cut)
    return value.masked_fill(value == NONE, -1.0)  # no such edge: every token joins
