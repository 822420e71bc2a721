"""`precision="input"`: SCC computed in the features' dtype, as the authors' code does, against a brute-force
reference written directly in fp16 (normalise, similarity, `> tau` with tau rounded to fp16, fp16 means, fp16
argmax and fp16 accumulation of the merge, divided in place by float counts)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.sparse.csgraph import connected_components

from llava.compression import CompressionConfig, compress

HALF = torch.float16


def half_unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=1, keepdim=True)  # fp16 in, fp16 out: the authors' normalisation


def ref_scc_half(x: torch.Tensor, tau: float) -> torch.Tensor:
    """fp16 SCC: components of {fp16 similarity > tau} (tau compared as fp16), ordered by highest-degree member,
    each the fp16 mean of its members."""
    unit = half_unit(x)
    sim = unit @ unit.T  # (n, n) fp16
    adjacency = (sim > tau).numpy()
    _, labels = connected_components(adjacency, directed=False)
    degree = adjacency.sum(axis=1)
    groups = [np.flatnonzero(labels == c) for c in range(labels.max() + 1)]
    groups.sort(key=lambda members: min(members, key=lambda i: (-degree[i], i)))
    return torch.stack([x[torch.from_numpy(m)].float().mean(dim=0).to(HALF) for m in groups])


def ref_compress_half(features: torch.Tensor, tau: float) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The whole pipeline in fp16: spatial SCC per frame, temporal SCC, merge with sequential fp16 sums."""
    concat = torch.cat([ref_scc_half(frame, tau) for frame in features])
    kept = ref_scc_half(concat, tau)
    flat = features.reshape(-1, features.shape[-1])
    assignment = (half_unit(flat) @ half_unit(kept).T).argmax(dim=1)
    merged = kept.clone()
    for i, j in enumerate(assignment.tolist()):
        merged[j] += flat[i]  # one fp16 rounding per added token
    counts = torch.bincount(assignment, minlength=kept.shape[0]) + 1
    return (merged.float() / counts[:, None].float()).to(HALF), assignment, concat.shape[0]  # float counts


def video(frames: int, tokens: int, dim: int, seed: int) -> torch.Tensor:
    """Regions that persist across frames, with noise levels that put many similarities near 0.8-0.95."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(6, dim, generator=g)
    layout = torch.randint(0, 6, (tokens,), generator=g)
    drift = torch.cumsum(0.1 * torch.randn(frames, 6, dim, generator=g), dim=0)
    return (centers[None] + drift)[:, layout] + 0.4 * torch.randn(frames, tokens, dim, generator=g)


CASES = [(f, t, d, tau, seed) for f, t, d in [(4, 25, 32), (6, 16, 64)] for tau in (0.8, 0.9) for seed in range(3)]


@pytest.mark.parametrize("frames,tokens,dim,tau,seed", CASES)
def test_input_precision_matches_fp16_reference(frames: int, tokens: int, dim: int, tau: float, seed: int) -> None:
    features = video(frames, tokens, dim, seed).to(HALF)
    expected, assignment, spatial_count = ref_compress_half(features, tau)
    result = compress(features, CompressionConfig(tau=tau, precision="input"))
    assert result.tokens.dtype == HALF
    assert result.stats.tokens_spatial == spatial_count
    assert result.tokens.shape == expected.shape
    assert torch.equal(result.assignment.flatten(), assignment)
    torch.testing.assert_close(result.tokens, expected, atol=2e-3, rtol=2e-3)  # fp16 sums: order differs


def test_input_precision_differs_from_float32() -> None:
    """The cases above are not vacuous: fp16 arithmetic changes the components somewhere, as it did for the
    authors (their token count at equal tau differed from float32 in 12 of 24 measured cases)."""
    changed = 0
    for frames, tokens, dim, tau, seed in CASES:
        features = video(frames, tokens, dim, seed).to(HALF)
        ours = compress(features, CompressionConfig(tau=tau)).stats
        theirs = compress(features, CompressionConfig(tau=tau, precision="input")).stats
        changed += (ours.tokens_spatial, ours.tokens_out) != (theirs.tokens_spatial, theirs.tokens_out)
    assert changed >= 2


def test_input_precision_on_float32_equals_default() -> None:
    features = video(4, 25, 32, seed=0)
    for config in (dict(tau=0.9), dict(retention_ratio=0.1)):
        default = compress(features, CompressionConfig(**config))
        same = compress(features, CompressionConfig(**config, precision="input"))
        assert torch.equal(default.tokens, same.tokens) and torch.equal(default.assignment, same.assignment)


@pytest.mark.parametrize("dtype", [HALF, torch.bfloat16])
def test_input_precision_ratio_mode_keeps_exactly_k(dtype: torch.dtype) -> None:
    features = video(6, 16, 64, seed=1).to(dtype)
    result = compress(features, CompressionConfig(retention_ratio=0.1, precision="input"))
    assert result.tokens.dtype == dtype and result.tokens.shape == (10, 64)


def test_bad_precision_raises() -> None:
    with pytest.raises(ValueError, match="precision must be one of"):
        CompressionConfig(tau=0.9, precision="fp16")


@pytest.fixture
def tf32_on():
    """lmms-eval's setting at import: the legacy flag, as it sets it."""
    matmul = torch.backends.cuda.matmul
    saved = matmul.fp32_precision
    matmul.allow_tf32 = True
    yield matmul
    matmul.fp32_precision = saved


def test_tf32_is_off_inside_compress_and_restored(monkeypatch: pytest.MonkeyPatch, tf32_on) -> None:
    from llava.compression import scc as scc_module

    features = video(4, 25, 32, seed=2)
    seen = []
    similarity = scc_module.symmetric_similarity

    def spy(x_unit: torch.Tensor) -> torch.Tensor:
        seen.append(tf32_on.fp32_precision)
        return similarity(x_unit)

    monkeypatch.setattr(scc_module, "symmetric_similarity", spy)
    with_tf32 = compress(features, CompressionConfig(tau=0.9))
    assert seen and set(seen) == {"ieee"}
    assert tf32_on.allow_tf32 and tf32_on.fp32_precision == "tf32"  # the caller's setting, readable both ways
    tf32_on.fp32_precision = "ieee"
    without = compress(features, CompressionConfig(tau=0.9))
    assert torch.equal(with_tf32.tokens, without.tokens) and torch.equal(with_tf32.assignment, without.assignment)


def test_time_only_when_asked() -> None:
    features = video(4, 25, 32, seed=0)
    assert compress(features, CompressionConfig(tau=0.9)).stats.time_ms is None
    timed = compress(features, CompressionConfig(tau=0.9), timed=True)
    assert timed.stats.time_ms is not None and timed.stats.time_ms > 0.0
