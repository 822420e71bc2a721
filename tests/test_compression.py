"""SCC and the ablation selectors against a brute-force reference of the paper's method, plus properties.

The reference works in float64 with scipy's connected_components on the explicit thresholded adjacency. Our
code computes similarities in float32, so a case only counts when no similarity lies within MARGIN of tau
(those edges could legitimately flip); tokens are compared with ATOL.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.sparse.csgraph import connected_components

from llava.compression import COMPRESSORS, METHODS, CompressionConfig, compress
from llava.compression import graph as graph_module
from llava.compression import merge as merge_module
from llava.compression import scc as scc_module
from llava.compression.graph import components, degrees, unit, weighted_edges
from llava.compression.scc import TemporalGraph, ordered_means, sampled_nodes

MARGIN = 1e-5


def cosine_similarity(x: torch.Tensor) -> torch.Tensor:
    x_unit = unit(x)
    return (x_unit @ x_unit.transpose(-1, -2)).clamp(-1.0, 1.0)
ATOL = 1e-5


# ----------------------------------------------------------------------------------------- reference
def _normalise(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norm, out=np.zeros_like(x), where=norm > 1e-12)


def ref_scc(x: np.ndarray, tau: float) -> tuple[np.ndarray, list[list[int]], float]:
    """SCC(X, tau) as the paper defines it: components of {cos > tau}, ordered by highest-degree member."""
    sim = _normalise(x) @ _normalise(x).T
    adjacency = sim > tau
    _, labels = connected_components(adjacency, directed=False)
    degree = adjacency.sum(axis=1)
    components = [np.flatnonzero(labels == c).tolist() for c in range(labels.max() + 1)]
    key = [min(members, key=lambda i: (-degree[i], i)) for members in components]
    components = [components[i] for i in np.argsort(key)]
    tokens = np.stack([x[members].mean(axis=0) for members in components])
    return tokens, components, float(np.abs(sim - tau).min())


def ref_merge(x: np.ndarray, kept: np.ndarray) -> np.ndarray:
    assignment = (_normalise(x) @ _normalise(kept).T).argmax(axis=1)
    out = kept.copy()
    np.add.at(out, assignment, x)
    return out / (np.bincount(assignment, minlength=len(kept)) + 1)[:, None]


def ref_pipeline(features: np.ndarray, tau: float) -> tuple[np.ndarray, int, float]:
    """Spatial SCC per frame -> temporal SCC on the concatenation -> merge. Returns tokens, M', min margin."""
    spatial = [ref_scc(frame, tau) for frame in features]
    concat = np.concatenate([tokens for tokens, _, _ in spatial])
    kept, _, margin_t = ref_scc(concat, tau)
    margin = min([margin_t] + [m for _, _, m in spatial])
    return ref_merge(features.reshape(-1, features.shape[-1]), kept), len(concat), margin


# ----------------------------------------------------------------------------------------- inputs
def clustered_video(frames: int, tokens: int, dim: int, regions: int, noise: float, seed: int) -> torch.Tensor:
    """Regions that persist across frames (a region keeps its patch positions and drifts slowly)."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(regions, dim, generator=g)
    layout = torch.randint(0, regions, (tokens,), generator=g)
    drift = torch.cumsum(0.05 * torch.randn(frames, regions, dim, generator=g), dim=0)
    base = centers[None] + drift  # (F, R, D)
    return base[:, layout] + noise * torch.randn(frames, tokens, dim, generator=g)  # (F, T, D)


CASES = [
    # (frames, tokens, dim, regions, noise, tau)
    (1, 12, 4, 3, 0.3, 0.8),
    (3, 16, 8, 4, 0.4, 0.9),
    (4, 25, 16, 6, 0.5, 0.85),
    (6, 9, 3, 2, 0.8, 0.5),
    (5, 36, 32, 8, 0.3, 0.95),
    (2, 49, 8, 10, 0.6, 0.7),
    (8, 16, 6, 5, 1.0, 0.3),
    (3, 20, 5, 20, 2.0, 0.0),
    (2, 30, 4, 3, 0.5, -0.2),
]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("seed", range(4))
def test_scc_matches_brute_force_reference(case: tuple, seed: int) -> None:
    frames, tokens, dim, regions, noise, tau = case
    features = clustered_video(frames, tokens, dim, regions, noise, seed)
    expected, spatial_count, margin = ref_pipeline(features.double().numpy(), tau)
    if margin < MARGIN:
        pytest.skip(f"a similarity lies within {margin:.1e} of tau; float32 vs float64 may flip it")
    result = compress(features, CompressionConfig(tau=tau))
    assert result.stats.tokens_spatial == spatial_count
    assert result.tokens.shape == expected.shape
    np.testing.assert_allclose(result.tokens.double().numpy(), expected, atol=ATOL, rtol=0)


def test_reference_cases_are_not_vacuous() -> None:
    """Most parametrised reference cases must actually run (not skip on margin) and compress something."""
    ran, compressed = 0, 0
    for frames, tokens, dim, regions, noise, tau in CASES:
        for seed in range(4):
            features = clustered_video(frames, tokens, dim, regions, noise, seed)
            expected, _, margin = ref_pipeline(features.double().numpy(), tau)
            ran += margin >= MARGIN
            compressed += len(expected) < frames * tokens
    assert ran >= 0.8 * len(CASES) * 4
    assert compressed >= 0.8 * len(CASES) * 4


@pytest.mark.parametrize("edge_share", [1, 1 << 20], ids=["buffers-fit", "buffers-overflow"])
@pytest.mark.parametrize("tile_elements", [1 << 25, 64], ids=["one-tile", "tiles"])
def test_components_equal_scipy_partition_and_degree(
    monkeypatch: pytest.MonkeyPatch, tile_elements: int, edge_share: int
) -> None:
    """Thresholded edges (one pass over row tiles; fixed-size edge buffers, or the exact second pass when they
    overflow) and their components equal scipy's, degrees included."""
    monkeypatch.setattr(graph_module, "_TILE_ELEMENTS", tile_elements)
    monkeypatch.setattr(graph_module, "_EDGE_SHARE", edge_share)
    g = torch.Generator().manual_seed(1)
    for trial in range(30):
        M = int(torch.randint(2, 80, (1,), generator=g))
        x = torch.randn(M, 4, generator=g)
        if trial % 3 == 0:  # duplicated tokens: many exactly tied similarities
            x = x[torch.randint(0, max(1, M // 4), (M,), generator=g)]
        tau = float(torch.rand(1, generator=g)) * 1.6 - 0.6
        sim = cosine_similarity(x[None])[0]
        u, v, w, diagonal = weighted_edges(lambda start, stop, sim=sim: sim[start:stop, start:], M, tau)
        labels, count = components(M, u, v)
        degree = degrees(u, v, w, diagonal, tau)
        adjacency = (sim > tau).numpy()
        ref_count, ref = connected_components(adjacency, directed=False)
        ours = labels.numpy()
        assert count == ref_count and len(np.unique(ours)) == count
        assert ((ref[:, None] == ref[None, :]) == (ours[:, None] == ours[None, :])).all()
        assert (ours == _ids_by_smallest_member(ref)).all()
        assert (degree.numpy() == adjacency.sum(1)).all()


def _ids_by_smallest_member(ref: np.ndarray) -> np.ndarray:
    """scipy's component labels renumbered 0 .. count-1 in the order of each component's smallest member."""
    first = np.array([np.flatnonzero(ref == c).min() for c in range(ref.max() + 1)])
    return np.argsort(np.argsort(first))[ref]


def test_components_of_long_chains() -> None:
    """Paths in scrambled order need many label-propagation rounds: still exact."""
    g = torch.Generator().manual_seed(0)
    for n in (2, 33, 1000):
        order = torch.randperm(n, generator=g)
        labels, count = components(2 * n, order[:-1], order[1:])  # nodes n .. 2n-1 stay alone
        assert count == n + 1
        assert (labels[:n] == 0).all() and torch.equal(labels[n:], torch.arange(1, n + 1))


def test_ordered_means_orders_by_highest_degree_member() -> None:
    x = torch.arange(10.0).view(5, 2)
    labels = torch.tensor([0, 1, 0, 1, 2])
    degree = torch.tensor([1, 1, 3, 2, 2])  # comp0's top member is 2, comp1's is 3 (deg 2 > 1), comp2's is 4
    out = ordered_means(x, labels, 3, degree)
    expected = torch.stack([x[[0, 2]].mean(0), x[[1, 3]].mean(0), x[4]])
    torch.testing.assert_close(out, expected)
    degree = torch.tensor([1, 5, 3, 2, 2])  # comp0 keyed by 2, comp1 by 1 -> comp1 first
    out = ordered_means(x, labels, 3, degree)
    torch.testing.assert_close(out, torch.stack([x[[1, 3]].mean(0), x[[0, 2]].mean(0), x[4]]))


# ----------------------------------------------------------------------------------------- ratio mode
@pytest.mark.parametrize("frames,tokens", [(1, 16), (4, 9), (8, 16), (3, 49), (16, 25)])
@pytest.mark.parametrize("ratio", [1.0, 0.5, 0.35, 0.1, 0.05, 0.01])
def test_ratio_mode_keeps_exactly_k(frames: int, tokens: int, ratio: float) -> None:
    features = clustered_video(frames, tokens, 16, 6, 0.5, seed=frames * tokens)
    result = compress(features, CompressionConfig(retention_ratio=ratio))
    k = max(1, round(ratio * frames * tokens))
    assert result.tokens.shape == (k, 16)
    assert result.stats.tokens_out == k
    assert k <= result.stats.tokens_spatial <= frames * tokens
    assert result.assignment.shape == (frames, tokens)
    assert set(result.assignment.flatten().tolist()) <= set(range(k))


@pytest.mark.parametrize("ratio", [0.5, 0.2, 0.05])
def test_ratio_mode_exact_k_with_tied_similarities(ratio: float) -> None:
    """Static video: identical frames make similarities tie exactly, which a plain threshold cannot split."""
    frame = clustered_video(1, 25, 8, 4, 0.5, seed=3)
    features = frame.expand(6, 25, 8).contiguous()
    result = compress(features, CompressionConfig(retention_ratio=ratio))
    assert result.tokens.shape[0] == max(1, round(ratio * 150))


def test_ratio_mode_thresholds_are_consistent() -> None:
    """The reported temporal threshold reproduces the kept count: tau mode on the spatial output at tau_t."""
    features = clustered_video(8, 36, 32, 6, 0.5, seed=5)
    result = compress(features, CompressionConfig(retention_ratio=0.1))
    stats = result.stats
    assert -1.0 <= stats.tau_spatial <= 1.0 and -1.0 <= stats.tau_temporal <= 1.0
    assert abs(stats.tau_spatial - stats.tau_temporal) < 0.1  # one shared tau, as in the paper
    spatial = compress(features, CompressionConfig(tau=stats.tau_spatial)).stats.tokens_spatial
    assert spatial == stats.tokens_spatial


# ----------------------------------------------------------------------------------------- properties
def test_lower_tau_gives_fewer_spatial_tokens() -> None:
    features = clustered_video(6, 49, 16, 8, 0.6, seed=2)
    counts = [compress(features, CompressionConfig(tau=t)).stats.tokens_spatial for t in (0.99, 0.95, 0.9, 0.8, 0.6)]
    assert counts == sorted(counts, reverse=True)
    assert counts[0] > counts[-1]


def test_identical_input_gives_identical_output() -> None:
    features = clustered_video(8, 36, 32, 6, 0.5, seed=9)
    for config in (CompressionConfig(tau=0.9), CompressionConfig(retention_ratio=0.1),
                   CompressionConfig(method="random", retention_ratio=0.2, seed=4)):
        a, b = compress(features, config), compress(features.clone(), config)
        assert torch.equal(a.tokens, b.tokens) and torch.equal(a.assignment, b.assignment)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_dtype_preserved_and_similarities_in_float32(dtype: torch.dtype) -> None:
    features = clustered_video(4, 25, 16, 5, 0.5, seed=1).to(dtype)
    result = compress(features, CompressionConfig(tau=0.9))
    assert result.tokens.dtype == dtype and result.tokens.device == features.device
    reference = compress(features.float(), CompressionConfig(tau=0.9))
    torch.testing.assert_close(result.tokens, reference.tokens.to(dtype))
    assert torch.equal(result.assignment, reference.assignment)


def test_merge_formula_hand_computed() -> None:
    x = torch.tensor([[[2.0, 0.0], [1.0, 0.2], [0.0, 1.0], [0.0, 3.0]]])  # (1, 4, 2)
    result = compress(x, CompressionConfig(method="uniform", retention_ratio=0.5))  # kept: tokens 0 and 3
    expected = torch.tensor([[(2 + 2 + 1) / 3, 0.2 / 3], [0.0, (3 + 3 + 1) / 3]])
    torch.testing.assert_close(result.tokens, expected)
    assert result.assignment.tolist() == [[0, 0, 1, 1]]


def test_merge_tiling_does_not_change_the_result(monkeypatch: pytest.MonkeyPatch) -> None:
    features = clustered_video(4, 25, 16, 5, 0.5, seed=7)
    full = compress(features, CompressionConfig(tau=0.8))
    monkeypatch.setattr(merge_module, "_TILE_ROWS", 7)
    tiled = compress(features, CompressionConfig(tau=0.8))
    torch.testing.assert_close(tiled.tokens, full.tokens)


def test_approximate_equals_exact_below_sampling_threshold() -> None:
    features = clustered_video(8, 49, 16, 6, 0.5, seed=4)  # 392 tokens < 3233 = sampling threshold at eps 0.05
    exact = compress(features, CompressionConfig(tau=0.85))
    approx = compress(features, CompressionConfig(tau=0.85, epsilon=0.05, seed=123))
    assert torch.equal(exact.tokens, approx.tokens)


def test_approximate_components_match_reference_on_the_same_sample() -> None:
    """With sampling active, components are those of the graph of edges touching a sampled node, every token in
    exactly one of them (the authors' union-find read-out can drop tokens; ours must not)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 300, 4, generator=g)
    sim = cosine_similarity(x)
    sampled = sampled_nodes(2, 300, 0.2, torch.Generator().manual_seed(1), x.device).view(2, 300)  # 143 of 300
    assert sampled.sum(dim=1).tolist() == [143, 143]
    for b in range(2):
        graph = TemporalGraph(x[b])
        labels, count, _ = graph.components(0.95, sampled[b])
        _, exact, _ = graph.components(0.95)
        allowed = (sampled[b, :, None] | sampled[b, None, :]).numpy()
        ref_count, ref = connected_components((sim[b] > 0.95).numpy() & allowed, directed=False)
        ours = labels.numpy()
        assert ours.max() + 1 == count == ref_count and np.bincount(ours).sum() == 300
        assert ((ref[:, None] == ref[None, :]) == (ours[:, None] == ours[None, :])).all()
        assert count > exact  # fewer edges than exact: more components here
    config = CompressionConfig(tau=0.95, epsilon=0.2, seed=5)
    assert torch.equal(compress(x, config).tokens, compress(x.clone(), config).tokens)


def test_approximate_spatial_step_matches_reference_on_the_same_sample() -> None:
    """The spatial step keeps, per frame, only the edges touching a sampled node: its token count is the number of
    components of that graph, every frame's count summed."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(3, 200, 4, generator=g)
    sim = cosine_similarity(x)
    sampled = sampled_nodes(3, 200, 0.25, torch.Generator().manual_seed(2), x.device)  # (600,) 85 per frame
    tokens, _, _ = scc_module.spatial_step(x, graph_module.symmetric_similarity(unit(x)), 0.95, sampled)
    chosen = sampled.view(3, 200)
    expected = sum(
        connected_components((sim[f] > 0.95).numpy() & (chosen[f, :, None] | chosen[f, None, :]).numpy(),
                             directed=False)[0]
        for f in range(3))
    exact, _, _ = scc_module.spatial_step(x, graph_module.symmetric_similarity(unit(x)), 0.95)
    assert tokens.shape[0] == expected > exact.shape[0]


@pytest.mark.parametrize(
    "config",
    [CompressionConfig(tau=0.9), CompressionConfig(tau=0.6), CompressionConfig(retention_ratio=0.1),
     CompressionConfig(retention_ratio=0.35), CompressionConfig(tau=0.8, epsilon=0.3, seed=2)],
    ids=["tau0.9", "tau0.6", "r0.1", "r0.35", "approx"],
)
def test_temporal_row_tiles_do_not_change_the_result(
    monkeypatch: pytest.MonkeyPatch, config: CompressionConfig
) -> None:
    """The temporal step reads its similarities in row tiles of the upper triangle (bounded memory, fewer FLOPs);
    one tile or many, the result must not change."""
    features = clustered_video(8, 36, 16, 6, 0.5, seed=11)
    whole = compress(features, config)  # one tile: fewer tokens than _UPPER_TILE_ROWS
    monkeypatch.setattr(graph_module, "_UPPER_TILE_ROWS", 40)
    monkeypatch.setattr(graph_module, "_TILE_ELEMENTS", 16 * 300)  # tiles of a few rows
    tiled = compress(features, config)
    assert tiled.stats.tokens_spatial > 16
    assert tiled.stats.tokens_out == whole.stats.tokens_out
    torch.testing.assert_close(tiled.tokens, whole.tokens, atol=1e-5, rtol=0)
    assert torch.equal(tiled.assignment, whole.assignment)


def test_zero_vectors_are_singletons() -> None:
    features = clustered_video(2, 16, 8, 3, 0.3, seed=0)
    features[0, 5] = 0.0
    expected, spatial_count, _ = ref_pipeline(features.double().numpy(), 0.5)
    result = compress(features, CompressionConfig(tau=0.5))
    assert result.stats.tokens_spatial == spatial_count
    np.testing.assert_allclose(result.tokens.double().numpy(), expected, atol=ATOL, rtol=0)
    assert torch.isfinite(result.tokens).all()


def test_none_passes_features_through() -> None:
    features = clustered_video(3, 16, 8, 3, 0.3, seed=0)
    result = compress(features, CompressionConfig(method="none"))
    assert torch.equal(result.tokens, features.reshape(48, 8))


@pytest.mark.parametrize("method", ["random", "uniform", "l2norm"])
@pytest.mark.parametrize("ratio", [0.05, 0.35, 1.0])
def test_selectors_keep_exactly_k(method: str, ratio: float) -> None:
    features = clustered_video(4, 25, 8, 5, 0.5, seed=0)
    result = compress(features, CompressionConfig(method=method, retention_ratio=ratio))
    assert result.tokens.shape == (max(1, round(ratio * 100)), 8)


def test_l2norm_selector_keeps_largest_norms() -> None:
    features = torch.ones(1, 6, 2)
    features[0, 4] *= 5
    features[0, 1] *= 3
    result = compress(features, CompressionConfig(method="l2norm", retention_ratio=2 / 6))
    norms = result.tokens.norm(dim=-1)
    assert norms[0] > math.sqrt(2) * 2 and norms[1] > math.sqrt(2) * 3  # tokens 1 and 4, in sequence order


def test_registry_covers_every_method() -> None:
    assert tuple(COMPRESSORS) == METHODS


# ----------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "features,message",
    [
        (torch.zeros(4, 8), "shape"),
        (torch.zeros(0, 4, 8), "non-empty"),
        (torch.zeros(2, 0, 8), "non-empty"),
        (torch.zeros(2, 4, 8, dtype=torch.long), "floating-point"),
        (torch.full((2, 4, 8), float("nan")), "NaN"),
        (torch.full((2, 4, 8), float("inf")), "NaN or inf"),
    ],
)
def test_bad_features_raise(features: torch.Tensor, message: str) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        compress(features, CompressionConfig(tau=0.9))


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"tau": 1.5}, "tau must be in"),
        ({"tau": float("nan")}, "tau must be in"),
        ({"retention_ratio": 0.0}, "retention_ratio must be in"),
        ({"retention_ratio": 1.2}, "retention_ratio must be in"),
        ({}, "exactly one of tau"),
        ({"tau": 0.9, "retention_ratio": 0.1}, "exactly one of tau"),
        ({"method": "bogus"}, "must be one of"),
        ({"method": "random", "tau": 0.9}, "fixed-budget"),
        ({"method": "none", "retention_ratio": 0.5}, "keeps every token"),
        ({"retention_ratio": 0.1, "epsilon": 0.05}, "tau mode only"),
        ({"tau": 0.9, "epsilon": 0.0}, "epsilon must be in"),
        ({"tau": "0.9"}, "must be a number"),
    ],
)
def test_bad_config_raises(kwargs: dict, message: str) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        CompressionConfig(**kwargs)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("config", [CompressionConfig(tau=0.9), CompressionConfig(retention_ratio=0.1)], ids=str)
def test_cuda_matches_cpu(config: CompressionConfig) -> None:
    """Same partition and count on the GPU; tokens equal up to float32 matmul rounding."""
    features = clustered_video(8, 49, 64, 6, 0.5, seed=3)
    cpu, gpu = compress(features, config), compress(features.cuda(), config)
    assert gpu.tokens.device.type == "cuda" and gpu.stats.tokens_out == cpu.stats.tokens_out
    torch.testing.assert_close(gpu.tokens.cpu(), cpu.tokens, atol=1e-4, rtol=0)


TREES = {"whole": None, "edges": -1.5, "edges-floored": 0.5}  # tree_weights(floor): whole, every edge, edges > 0.5


def _cut(graph: TemporalGraph, k: int, tree: str) -> tuple[torch.Tensor, float]:
    """cut_tree as ratio mode calls it, reading the whole spanning tree, or the forest of an edge list (a floor
    above the cut level makes cut_tree fall back to the whole tree)."""
    labels, _, tau = scc_module.cut_tree(graph, graph.tree_weights(TREES[tree]), k)
    return labels, tau


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("tree", list(TREES))
def test_ratio_cut_equals_scipy_single_linkage(monkeypatch: pytest.MonkeyPatch, tree: str, dtype: torch.dtype) -> None:
    """The temporal cut at exactly k is single-linkage clustering (distance 1 - cos) cut into k clusters, in the
    working precision the caller chose (float64 values must not pass through float32 anywhere)."""
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform

    monkeypatch.setattr(graph_module, "_TILE_ELEMENTS", 8 * 90)  # several row tiles per pass
    g = torch.Generator().manual_seed(4)
    for trial in range(12):
        tokens = torch.randn(int(torch.randint(12, 90, (1,), generator=g)), 6, generator=g).to(dtype)
        graph = TemporalGraph(tokens)
        k = int(torch.randint(1, tokens.shape[0] + 1, (1,), generator=g))
        labels, _ = _cut(graph, k, tree)
        distance = 1.0 - cosine_similarity(tokens[None].double())[0].numpy()
        np.fill_diagonal(distance, 0.0)
        ref = fcluster(linkage(squareform(distance, checks=False), "single"), k, "maxclust")
        ours = labels.numpy()
        assert ours.max() + 1 == k
        assert ((ref[:, None] == ref[None, :]) == (ours[:, None] == ours[None, :])).all(), trial


def test_autocast_does_not_lower_similarity_precision() -> None:
    """Callers may run the model under autocast; the compressor's similarities must stay float32."""
    features = clustered_video(4, 25, 16, 5, 0.5, seed=1)
    reference = compress(features, CompressionConfig(tau=0.9))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        result = compress(features, CompressionConfig(tau=0.9))
    assert torch.equal(result.tokens, reference.tokens)


def assert_single_linkage_cut(sim: np.ndarray, labels: np.ndarray, k: int) -> None:
    """`labels` is a single-linkage clustering of `sim` into exactly k clusters, ties at the cut level allowed:
    scipy's dendrogram gives the cut level s; every cluster must be a union of the components of {sim > s},
    lie inside one component of {sim >= s}, and be connected by its own edges >= s."""
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform

    M = sim.shape[0]
    distance = 1.0 - sim.astype(np.float64)
    np.fill_diagonal(distance, 0.0)
    Z = linkage(squareform(distance, checks=False), "single")
    level = Z[M - k - 1, 2] if k < M else 0.0  # distance of the last merge a k-cluster cut keeps
    coarse = fcluster(Z, level, "distance")  # cophenetic distance <= level
    fine = fcluster(Z, np.nextafter(level, -np.inf), "distance") if level > 0 else np.arange(M)
    assert len(np.unique(labels)) == k
    same = labels[:, None] == labels[None, :]
    assert (same >= (fine[:, None] == fine[None, :])).all(), "a cluster splits a component above the cut level"
    assert (same <= (coarse[:, None] == coarse[None, :])).all(), "a cluster joins tokens below the cut level"
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        inside = distance[np.ix_(members, members)] <= level
        assert connected_components(inside, directed=False)[0] == 1, "a cluster is joined by a weaker edge"


def _graph_on_table(table: torch.Tensor) -> TemporalGraph:
    """A temporal graph whose similarities are the given table (exact ties, which no float vectors give)."""
    graph = TemporalGraph(torch.randn(table.shape[0], 3))
    graph.upper_rows = lambda start, stop: table[start:stop, start:]
    return graph


@pytest.mark.parametrize("tree", list(TREES))
def test_ratio_cut_with_tied_weights_is_single_linkage(tree: str) -> None:
    """A path of 0.9 ties (2-3-4-1-5-0) and a 0.3 pair (6-7), cut at k = 4: one 0.9 edge must stay out and the
    pair must stay apart. Boruvka's first round picks only 3 of the 5 tied edges plus the 0.3 one, so a budget
    taken from that round's edges, not from the tied ones, would join the pair."""
    table = torch.zeros(8, 8)
    table.fill_diagonal_(1.0)
    path = [2, 3, 4, 1, 5, 0]
    for a, b in zip(path, path[1:], strict=False):
        table[a, b] = table[b, a] = 0.9
    table[6, 7] = table[7, 6] = 0.3
    labels, tau = _cut(_graph_on_table(table), 4, tree)
    assert tau == pytest.approx(0.9)
    assert_single_linkage_cut(table.numpy(), labels.numpy(), 4)
    assert labels[6] != labels[7]


@pytest.mark.parametrize("tree", list(TREES))
def test_ratio_cut_with_duplicated_tokens_is_single_linkage(tree: str) -> None:
    g = torch.Generator().manual_seed(6)
    for _ in range(10):
        M = int(torch.randint(8, 60, (1,), generator=g))
        base = torch.randn(max(2, M // 3), 4, generator=g)
        tokens = base[torch.randint(0, base.shape[0], (M,), generator=g)]  # many exactly equal similarities
        table = cosine_similarity(tokens[None])[0]
        k = int(torch.randint(1, M + 1, (1,), generator=g))
        labels, _ = _cut(_graph_on_table(table), k, tree)
        assert_single_linkage_cut(table.numpy(), labels.numpy(), k)


def test_frame_tables_are_symmetric_bit_for_bit() -> None:
    """Per-frame Boruvka reads an edge from either side of its table; a plain matmul of these 10 tokens is not
    symmetric in the last bit on AVX2 CPUs (the case below), the table Boruvka reads must be."""
    x = unit(torch.randn(4, 10, 64, generator=torch.Generator().manual_seed(0)))
    sim = graph_module.symmetric_similarity(x)
    assert torch.equal(sim, sim.transpose(-1, -2))
    torch.testing.assert_close(sim, x @ x.transpose(-1, -2), rtol=0, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16], ids=str)
@pytest.mark.parametrize("tree", list(TREES))
def test_temporal_graph_reads_only_the_upper_triangle(tree: str, dtype: torch.dtype) -> None:
    """Every temporal pass (edge lists, the whole tree) reads a pair from the upper triangle only: a table whose
    lower triangle is garbage cuts exactly as its symmetric upper triangle does, in every working precision."""
    g = torch.Generator().manual_seed(8)
    for _ in range(8):
        M = int(torch.randint(8, 50, (1,), generator=g))
        table = cosine_similarity(torch.randn(M, 5, generator=g)[None])[0].to(dtype)
        symmetric = torch.triu(table) + torch.triu(table, 1).T
        garbage = torch.where(torch.ones(M, M, dtype=torch.bool).tril(-1), torch.rand(M, M, generator=g).to(dtype),
                              table)
        k = int(torch.randint(1, M + 1, (1,), generator=g))
        expected, _ = _cut(_graph_on_table(symmetric), k, tree)
        labels, _ = _cut(_graph_on_table(garbage), k, tree)
        assert torch.equal(labels, expected)


def test_frame_components_equal_scipy() -> None:
    """Components read straight off a batch of dense adjacency matrices, numbered by their smallest members."""
    g = torch.Generator().manual_seed(2)
    for trial in range(20):
        B, M = int(torch.randint(1, 5, (1,), generator=g)), int(torch.randint(1, 60, (1,), generator=g))
        x = torch.randn(B, M, 3, generator=g)
        if trial % 2:  # long chains: neighbours along a line only
            x = torch.cumsum(torch.randn(B, M, 3, generator=g) * 0.05, dim=1) + torch.randn(B, 1, 3, generator=g)
        adjacency = graph_module.symmetric_similarity(unit(x)) > 0.9
        labels, count, _ = graph_module.frame_components(adjacency)
        block = torch.block_diag(*adjacency).numpy()  # (B*M, B*M), no edges between the graphs
        ref_count, ref = connected_components(block, directed=False)
        ours = labels.numpy()
        assert count == ref_count
        assert ((ref[:, None] == ref[None, :]) == (ours[:, None] == ours[None, :])).all()
        assert (ours == _ids_by_smallest_member(ref)).all()


@pytest.mark.parametrize("tokens", [2, 5, 33, 196])
@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "tied"])
@pytest.mark.parametrize("layout", ["walk", "arc"])
def test_frame_tree_weights_equal_scipy(tokens: int, ties: bool, layout: str) -> None:
    """The per-frame spanning trees behind the ratio search (Boruvka rounds while a frame has more than
    _CLOSURE_SLOTS slots, then the (max, min) closure) must weigh what a maximum spanning tree weighs: scipy's
    minimum spanning tree of 2 - sim, read back at its edges, frame by frame, ties included. On an arc (angles
    rising by random steps, tokens shuffled) the tree is the path through every token, so a token's link to the
    earlier slots can run through many later ones."""
    from scipy.sparse.csgraph import minimum_spanning_tree

    g = torch.Generator().manual_seed(tokens)
    if layout == "walk":
        x = torch.cumsum(torch.randn(8, tokens, 8, generator=g) * 0.3, dim=1)  # (8 frames, tokens, 8)
    else:
        angle = torch.cumsum(torch.rand(8, tokens, generator=g) * (math.pi / tokens), dim=1)  # below pi in all
        x = torch.cat([torch.stack([angle.cos(), angle.sin()], dim=-1), torch.zeros(8, tokens, 6)], dim=-1)
        x = x[:, torch.randperm(tokens, generator=g)]  # slot order off the path: bottlenecks span many hops
    sim = graph_module.symmetric_similarity(unit(x))
    if ties:
        sim = (sim * 4).round_() / 4  # a few levels: most tree weights tie
    ours = torch.sort(graph_module.boruvka(sim.clone()), descending=True).values
    assert ours.shape[0] >= 8 * tokens  # a slot per node: the ratio search indexes it by count
    expected = []
    for frame in sim.double().numpy():
        cost = 2.0 - frame  # >= 1: scipy reads 0 as no edge; exact in float64
        np.fill_diagonal(cost, 0.0)
        tree = minimum_spanning_tree(cost).tocoo()
        expected += frame[tree.row, tree.col].tolist()
    assert len(expected) == 8 * (tokens - 1)
    real = ours[: len(expected)].double().tolist()
    assert real == sorted(expected, reverse=True)
    assert (ours[len(expected):] == float("-inf")).all()


def test_device_side_threshold_equals_the_host_one() -> None:
    """The ratio search computes its next spatial threshold on the device (no read); it must be the one
    _tau_keeping reads on the host, at every count, including the ends."""
    features = clustered_video(4, 16, 8, 3, 0.5, seed=3)
    weights = scc_module._tree_weights(graph_module.symmetric_similarity(unit(features)))
    N = 64
    device = scc_module._threshold_keeping(weights, N, torch.arange(1, N + 1, dtype=torch.float64)).tolist()
    host = [scc_module._tau_keeping(weights, N, count) for count in range(1, N + 1)]
    assert device == host


def test_ratio_mode_on_a_table_whose_matmul_is_asymmetric() -> None:
    """A small temporal graph whose tree weight and edge (5, 8) differed in the last bit between the two sides of
    the matmul: the cut at the tree weight merged one cluster too many ("left 2 clusters instead of 3")."""
    from llava.testing.synthetic import region_video

    x = region_video(frames=4, grid=4, dim=64)[:2]
    for ratio in (0.05, 0.1, 0.2, 0.35):
        result = compress(x, CompressionConfig(retention_ratio=ratio))
        assert result.tokens.shape[0] == max(1, round(ratio * 32))


# ----------------------------------------------------------------------------------------- probe reuse
def _edge_set(edges: tuple) -> dict[tuple[int, int], float]:
    """{(low end, high end): weight} of an edge list (-inf entries are no edges)."""
    u, v, w, _ = edges
    return {(min(a, b), max(a, b)): c for a, b, c in zip(u.tolist(), v.tolist(), w.tolist(), strict=True)
            if c > float("-inf")}


@pytest.mark.parametrize("new", [0, 1, 7, 30])
@pytest.mark.parametrize("raise_floor", [0.0, 0.05])
def test_reused_edges_equal_a_fresh_pass(monkeypatch: pytest.MonkeyPatch, new: int, raise_floor: float) -> None:
    """A probe graph built from an earlier probe's edges (pairs of equal tokens) plus a pass over its new tokens'
    rows holds exactly the edges, weights and diagonal a fresh pass finds, in any token order."""
    monkeypatch.setattr(graph_module, "_TILE_ELEMENTS", 16 * 50)  # several row tiles per pass
    g = torch.Generator().manual_seed(new)
    earlier_tokens = torch.randn(60, 8, generator=g) + 2.0 * torch.randn(1, 8, generator=g)  # many edges above 0.5
    kept = torch.randperm(60, generator=g)[: 60 - min(new, 20)]  # earlier tokens that are still tokens
    tokens = torch.cat([earlier_tokens[kept], torch.randn(new, 8, generator=g)])
    shuffle = torch.randperm(tokens.shape[0], generator=g)
    tokens = tokens[shuffle]
    same = torch.cat([kept, torch.full((new,), -1)])[shuffle]
    floor = 0.5
    earlier = TemporalGraph(earlier_tokens)
    reuse = scc_module.Reuse(earlier.edges(floor), floor, same, new)
    reused = TemporalGraph(tokens, reuse).edges(floor + raise_floor)
    fresh = TemporalGraph(tokens).edges(floor + raise_floor)
    expected, got = _edge_set(fresh), _edge_set(reused)
    assert len(expected) > 50 and got.keys() == expected.keys()  # none at or below the floor, none twice
    assert len(got) == int((reused[2] > float("-inf")).sum())
    torch.testing.assert_close(torch.tensor([got[e] for e in expected]), torch.tensor(list(expected.values())),
                               atol=1e-6, rtol=0)
    torch.testing.assert_close(reused[3], fresh[3], atol=1e-6, rtol=0)


def test_spatial_step_counts_tokens_not_in_the_earlier_step() -> None:
    """The spatial step's count of new tokens (components that are no component of an earlier step on the same
    table), against member sets from scipy at both thresholds, going finer and coarser."""
    x = clustered_video(5, 30, 8, 6, 0.6, seed=9)
    sim = graph_module.symmetric_similarity(unit(x))

    def member_sets(tau: float) -> set[frozenset[int]]:
        sets = set()
        for f in range(x.shape[0]):
            _, labels = connected_components((sim[f] > tau).numpy(), directed=False)
            sets |= {frozenset((f * 30 + np.flatnonzero(labels == c)).tolist()) for c in range(labels.max() + 1)}
        return sets

    for earlier_tau, tau in [(0.5, 0.7), (0.7, 0.5), (0.6, 0.6), (0.2, 0.9)]:
        earlier_tokens, earlier_of, _ = scc_module.spatial_step(x, sim, earlier_tau)
        earlier_members = torch.bincount(earlier_of, minlength=earlier_tokens.shape[0])
        tokens, _, new = scc_module.spatial_step(x, sim, tau, earlier=(earlier_of, earlier_members))
        expected = len(member_sets(tau) - member_sets(earlier_tau))
        assert new == expected and (expected > 0) == (earlier_tau != tau)


@pytest.mark.parametrize("seed,ratio,regions", [(0, 0.1, 64), (0, 0.05, 64), (1, 0.1, 64), (2, 0.35, 64),
                                                 (2, 0.05, 64), (0, 0.35, 32)])
def test_ratio_search_reuse_does_not_change_the_result(monkeypatch: pytest.MonkeyPatch, seed: int, ratio: float,
                                                       regions: int) -> None:
    """Later probes reuse earlier probes' temporal edges; with reuse switched off the result is the same (cases
    where the search takes 2-3 probes)."""
    from llava.testing.synthetic import region_video

    x = region_video(frames=8 if regions == 64 else 6, grid=14, dim=64, regions=regions, seed=seed)
    patches = []
    patch = TemporalGraph._patch
    monkeypatch.setattr(TemporalGraph, "_patch", lambda self, *a: patches.append(1) or patch(self, *a))
    reused = compress(x, CompressionConfig(retention_ratio=ratio))
    monkeypatch.setattr(scc_module, "_REUSE_SHARE", -1.0)
    fresh = compress(x, CompressionConfig(retention_ratio=ratio))
    assert patches, "no probe reused an earlier one"
    assert (reused.stats.tokens_spatial, reused.stats.tau_spatial, reused.stats.tau_temporal) == (
        fresh.stats.tokens_spatial, fresh.stats.tau_spatial, fresh.stats.tau_temporal)
    torch.testing.assert_close(reused.tokens, fresh.tokens, atol=1e-6, rtol=0)
    assert torch.equal(reused.assignment, fresh.assignment)
