"""LLaVA-Scissor's Semantic Connected Components compression (arXiv 2506.21862, Sec. 3 and Appendix C).

SCC(X, tau): link tokens whose cosine similarity is > tau; each connected component becomes the mean of its
members; components are ordered by the index of their highest-degree member (degree counts the self edge; ties
to the lower index). The spatial step runs SCC on every frame, the temporal step on all spatial outputs
concatenated in frame order; the merge step (merge.py) then folds every original token into its most similar
kept token.

Two budget modes:
- tau: the paper's mode; the token count varies per video.
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

from .graph import boruvka, contract, similarity, tiled_boruvka, union_labels, unit
from .merge import merge_into_kept, segment_sum

_NONE = float("-inf")
_SEARCH_PROBES = 3  # temporal passes the ratio mode may spend finding a common threshold
_GAP_DONE = 0.01  # spatial and temporal thresholds this close count as "the same tau"
_SEARCH_WINDOW = 0.05  # a probe's temporal tree is only built above tau_spatial - this
_EDGE_LIST_DEGREE = 64  # average degree up to which components come from the edge list instead of Boruvka
_SAMPLE_ROWS = 16  # the average degree is estimated on every 16th row
DENSE_LIMIT = 8192  # temporal steps with more tokens than this work in tiles (a dense table would exceed 256 MB)


@dataclass
class SCCOutput:
    """tokens [K, D] in the working precision, assignment [N] into tokens, and what each step did."""

    tokens: Tensor
    assignment: Tensor
    tokens_spatial: int
    tau_spatial: float
    tau_temporal: float


def ordered_means(x: Tensor, labels: Tensor, degree: Tensor) -> Tensor:
    """Component means in SCC order. x [N, D], labels [N] dense ids in [0, C), degree [N] -> [C, D].

    The order key of a component is the index of its highest-degree member (ties to the lower index), which
    keeps the output in spatial / temporal order as the authors' code does.
    """
    N = x.shape[0]
    C = int(labels.max()) + 1
    idx = torch.arange(N, device=x.device)
    score = degree.long() * N + (N - 1 - idx)  # (N,) higher degree first, then lower index
    best = torch.full((C,), -1, dtype=torch.long, device=x.device).scatter_reduce_(0, labels, score, "amax")
    key = N - 1 - best % N  # (C,) index of each component's highest-degree member
    rank = torch.empty_like(key).scatter_(0, torch.argsort(key), torch.arange(C, device=x.device))  # (C,)
    order = rank[labels]  # (N,) output position of each token's component
    counts = torch.bincount(order, minlength=C)  # (C,)
    wide = torch.promote_types(x.dtype, torch.float32)  # fp16/bf16 means round once, as their torch.mean does
    sums = segment_sum(x.to(wide), order, C)  # (C, D)
    return sums.div_(counts[:, None].to(wide)).to(x.dtype)  # in place: no second [C, D] buffer


def sampled_nodes(B: int, M: int, epsilon: float, generator: torch.Generator, device: torch.device) -> Tensor:
    """[B, M] bool: the min(M, ceil(ln M / eps^2)) nodes per graph whose edges the approximate mode keeps."""
    n_sample = min(M, math.ceil(math.log(M) / epsilon**2)) if M > 1 else M
    ranks = torch.rand(B, M, generator=generator).argsort(dim=1).argsort(dim=1).to(device)  # (B, M)
    return ranks < n_sample


def threshold_components(
    sim: Tensor, tau: float, sampled: Tensor | None = None, consume: bool = False
) -> tuple[Tensor, Tensor]:
    """Connected components of {sim > tau} for each graph in sim [B, M, M]; with `sampled` [B, M], only edges
    touching a sampled node count (the paper's approximate components).

    Returns labels [B, M] (dense per graph) and degree [B, M]: row counts of sim > tau, self included (in the
    full graph, also in approximate mode, as the authors' code orders by it). Sparse graphs (the usual case at
    useful taus) are joined from their edge list; dense ones, and ones whose tokens are mostly alone (a table
    Boruvka shrinks at once), by Boruvka. `consume=True` lets that path overwrite `sim` instead of copying it.
    """
    B, M, _ = sim.shape
    adjacency = sim > tau  # (B, M, M)
    if _use_edge_list(adjacency):
        b, i, j = adjacency.nonzero(as_tuple=True)  # (E,) each, self loops included (harmless for the union)
        u, v = b * M + i, b * M + j
        degree = torch.bincount(u, minlength=B * M).view(B, M).int()  # (B, M)
        if sampled is not None:
            keep = sampled.view(-1)[u] | sampled.view(-1)[v]
            u, v = u[keep], v[keep]
        return _dense_per_graph(union_labels(B * M, u, v), B, M), degree
    selfloop = adjacency.diagonal(dim1=1, dim2=2).int()  # (B, M)
    full_degree = adjacency.sum(dim=-1, dtype=torch.int32) if sampled is not None else None
    threshold = torch.nn.functional.threshold_ if consume else torch.nn.functional.threshold
    table = threshold(sim, tau, _NONE)  # (B, M, M) keeps sim > tau
    if sampled is not None:
        table.masked_fill_(~(sampled[:, :, None] | sampled[:, None, :]), _NONE)
    forest = boruvka(table, with_degree=full_degree is None)  # degrees from its first, compacted table
    return forest.labels, full_degree if full_degree is not None else forest.degree + selfloop


def _use_edge_list(adjacency: Tensor) -> bool:
    """Edge list (compare + nonzero + union) or Boruvka on the table? Judged on every 16th row: the edge list
    wins when edges are few but most tokens have some (Boruvka would contract a large table), and always on the
    spatial step's many small per-frame graphs (Boruvka's per-round overhead dominates there)."""
    B = adjacency.shape[0]
    degree = adjacency[:, ::_SAMPLE_ROWS].sum(dim=-1, dtype=torch.int32).float()  # (B, M / 16) incl. self
    sparse = float(degree.mean()) <= _EDGE_LIST_DEGREE
    return sparse and (B > 1 or float((degree > 1).float().mean()) >= 0.5)


def _dense_per_graph(labels: Tensor, B: int, M: int) -> Tensor:
    """Global labels [B*M] (smallest node id of each component) -> dense ids per graph [B, M]."""
    root = (labels == torch.arange(B * M, device=labels.device)).view(B, M)  # (B, M)
    rank = (root.cumsum(dim=1) - 1).view(B * M)  # (B*M,) rank of each root within its graph
    return rank[labels].view(B, M)


def spatial_step(
    x: Tensor, sim: Tensor, tau: float, sampled: Tensor | None = None, consume: bool = False
) -> Tensor:
    """x [F, T, D], sim [F, T, T] -> SCC tokens of every frame, concatenated in frame order [M', D]."""
    F, T, D = x.shape
    labels, degree = threshold_components(sim, tau, sampled, consume)  # (F, T) each
    counts = labels.amax(dim=1) + 1  # (F,)
    offsets = torch.cumsum(counts, dim=0) - counts  # (F,) first global id of each frame's components
    global_labels = (labels + offsets[:, None]).view(F * T)  # (F*T,)
    return ordered_means(x.view(F * T, D), global_labels, degree.view(F * T))


class TemporalGraph:
    """The temporal step's graph over the M' spatial tokens.

    Up to DENSE_LIMIT tokens it is one dense [1, M', M'] similarity table (fast: Boruvka with contraction);
    above, similarities are recomputed in row tiles each Boruvka round, so memory stays O(tile x M') for long
    videos at the price of one similarity pass per round. Both give the same components.
    """

    def __init__(self, tokens: Tensor) -> None:
        self.size = tokens.shape[0]
        self.x_unit = unit(tokens)  # (M', D)
        self.table = similarity(self.x_unit[None]) if self.size <= DENSE_LIMIT else None  # (1, M', M')

    def components(self, tau: float, sampled: Tensor | None = None, consume: bool = False) -> tuple[Tensor, Tensor]:
        """Labels [M'] and degrees [M'] (self included) of SCC at tau."""
        if self.table is not None:
            labels, degree = threshold_components(self.table, tau, sampled, consume)
            return labels[0], degree[0]
        forest = tiled_boruvka(self.x_unit, above=tau, sampled=None if sampled is None else sampled[0],
                               with_degree=True)
        selfloop = ((self.x_unit * self.x_unit).sum(dim=-1).clamp(-1.0, 1.0) > tau).int()  # (M',)
        return forest.labels[0], forest.degree[0] + selfloop

    def tree_weights(self, floor: float | None = None) -> Tensor:
        """Single-linkage merge similarities (maximum spanning tree weights), strongest first; with `floor`,
        only those above it (the spanning forest of {sim > floor} holds exactly those, and is much cheaper)."""
        if self.table is None:
            forest = tiled_boruvka(self.x_unit, above=floor)
        else:
            table = self.table.clone() if floor is None else torch.nn.functional.threshold(self.table, floor, _NONE)
            forest = boruvka(table)
        return torch.sort(forest.edge_weight.detach(), descending=True).values

    def merge_strongest(self, labels: Tensor, merges: int) -> Tensor:
        """Merge `merges` more pairs of components [M'] along the strongest edges between them."""
        count = int(labels.max()) + 1
        if self.table is None:
            return tiled_boruvka(self.x_unit, start=labels, max_merges=merges).labels[0]
        groups = boruvka(contract(self.table.clone(), labels[None], count), max_merges=merges).labels  # (1, C)
        return groups[0][labels]


def scc_tau(x: Tensor, tau: float, epsilon: float | None, seed: int) -> SCCOutput:
    """Paper mode: spatial SCC per frame, temporal SCC over the results, merge. x [F, T, D] in the working precision."""
    F, T, D = x.shape
    generator = torch.Generator().manual_seed(seed)
    x_unit = unit(x)  # (F, T, D)
    sim = similarity(x_unit)  # (F, T, T)
    sampled = sampled_nodes(F, T, epsilon, generator, x.device) if epsilon else None
    spatial = spatial_step(x, sim, tau, sampled, consume=True)  # (M', D)
    del sim
    graph = TemporalGraph(spatial)
    sampled_t = sampled_nodes(1, graph.size, epsilon, generator, x.device) if epsilon else None
    labels, degree = graph.components(tau, sampled_t, consume=True)
    kept = ordered_means(spatial, labels, degree)  # (K, D)
    tokens, assignment = merge_into_kept(x.view(F * T, D), kept, x_unit.view(F * T, D))
    return SCCOutput(tokens, assignment, spatial.shape[0], tau, tau)


def _tree_weights(sim: Tensor) -> Tensor:
    """Maximum spanning tree weights of each graph in a dense batch [B, M, M], strongest first."""
    return torch.sort(boruvka(sim.detach().clone()).edge_weight, descending=True).values


def _tau_keeping(weights: Tensor, num_nodes: int, count: int, floored: bool = False) -> float | None:
    """Largest threshold at which graphs with these tree weights keep >= `count` components in total; None when
    the answer lies below the weights of a floored tree."""
    cut = num_nodes - count  # tree edges that may stay above the threshold
    if cut < 0:
        return 1.0
    if cut < weights.numel():
        return float(weights[cut])
    return None if floored else -1.0


def cut_tree(graph: TemporalGraph, weights: Tensor, k: int) -> tuple[Tensor, Tensor, float]:
    """Partition the temporal graph into exactly k single-linkage clusters. Returns labels, degree, tau.

    The clusters are the components of {sim > tau} with tau the (M - k + 1)-th strongest tree weight. When tree
    weights tie at tau that leaves more than k components; the missing merges are the strongest remaining
    edges between components (similarity exactly tau), taken by a budgeted Boruvka, ties to the lower index.
    """
    tau = _tau_keeping(weights, graph.size, k, floored=True)
    if tau is None:  # the cut lies below the floored tree: find the whole tree
        tau = _tau_keeping(graph.tree_weights(), graph.size, k)
    labels, degree = graph.components(tau)
    count = int(labels.max()) + 1
    if count > k:
        labels = graph.merge_strongest(labels, count - k)
        count = int(labels.max()) + 1
    if count != k:
        raise RuntimeError(f"internal error: the single-linkage cut left {count} clusters instead of {k}")
    return labels, degree, tau


def scc_ratio(x: Tensor, k: int) -> SCCOutput:
    """Exactly k tokens. x [F, T, D] in the working precision.

    Probe spatial thresholds (chosen on the spatial single-linkage weights so that the spatial count is
    geometrically between k and N), find the temporal threshold that leaves k parts, and keep the probe where
    the two thresholds agree best; each probe costs one temporal similarity pass. Then cut at exactly k.
    """
    F, T, D = x.shape
    N = F * T
    x_unit = unit(x)  # (F, T, D)
    sim = similarity(x_unit)  # (F, T, T)
    spatial_weights = _tree_weights(sim)  # (N - F,) over all frames
    low, high = k, N
    best = None
    for _ in range(_SEARCH_PROBES):
        tau_s = _tau_keeping(spatial_weights, N, round(math.sqrt(low * high)))
        spatial = spatial_step(x, sim, tau_s)  # (M', D), M' >= k
        graph = TemporalGraph(spatial)
        floor = tau_s - _SEARCH_WINDOW
        weights_t = graph.tree_weights(floor)
        tau_t = _tau_keeping(weights_t, graph.size, k, floored=True)
        gap = (floor if tau_t is None else tau_t) - tau_s
        if best is None or abs(gap) < abs(best[0]):
            best = (gap, tau_s, spatial, graph, weights_t)
        if gap > 0:  # temporal threshold above spatial: the spatial step merged too much
            low = graph.size
        else:
            high = graph.size
        if abs(gap) < _GAP_DONE or high - low <= 1:
            break
    _, tau_s, spatial, graph, weights_t = best
    labels, degree, tau_t = cut_tree(graph, weights_t, k)
    kept = ordered_means(spatial, labels, degree)  # (k, D)
    tokens, assignment = merge_into_kept(x.view(N, D), kept, x_unit.view(N, D))
    return SCCOutput(tokens, assignment, graph.size, tau_s, tau_t)
