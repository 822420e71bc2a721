"""Our EVS and VidCom2 against the functions vLLM ships, `compute_retention_mask` of
`vllm.multimodal.video_prune.evs` / `.vidcom2`, on the same features (q = 1 - r).

Needs vLLM (`bash scripts/test_serving.sh` installs it in .venv-vllm and runs these tests); skipped otherwise.
vLLM takes flat features [F * H * W, D] and a (F, H, W) grid; (F, 1, T) with merge size 1 is our [F, T, D].

The counts differ on purpose (ours K = max(1, round(r * F * T)), vLLM's int() rule with its per-frame floors), so
each method is compared twice: with vLLM's count function replaced by ours (the masks must be equal), and as
shipped (the masks must be nested, differing by exactly the count difference). VidCom2 in vLLM picks among
exactly equal scores with `topk`, whose choice there is implementation-defined, where ours takes the lower index:
on tie-heavy inputs (and on bf16 features, whose scores round to few distinct values) its masks are compared up
to those ties.
"""
from __future__ import annotations

import pytest
import torch

REASON = "vLLM is not installed: bash scripts/test_serving.sh runs these tests"
evs = pytest.importorskip("vllm.multimodal.video_prune.evs", reason=REASON)
vidcom2 = pytest.importorskip("vllm.multimodal.video_prune.vidcom2", reason=REASON)

from llava.compression import CompressionConfig, compress  # noqa: E402
from llava.compression.vidcom2 import vidcom2_scores  # noqa: E402

MODULES = {"evs": evs, "vidcom2": vidcom2}
SHAPES = [(32, 196, 64), (16, 196, 896), (8, 16, 32), (5, 9, 7), (1, 16, 8), (3, 4, 1)]
RATIOS = [0.001, 0.05, 0.1, 0.35, 0.5, 0.9, 1.0]


def features(frames: int, tokens: int, dim: int, dtype: torch.dtype = torch.float32, seed: int = 0) -> torch.Tensor:
    return torch.randn(frames, tokens, dim, generator=torch.Generator().manual_seed(seed)).to(dtype)


def ours(method: str, x: torch.Tensor, ratio: float) -> torch.Tensor:
    """Our keep mask [F * T], computed in the features' dtype (as vLLM computes)."""
    result = compress(x, CompressionConfig(method=method, retention_ratio=ratio, precision="input"))
    return result.assignment.reshape(-1) >= 0


def theirs(method: str, x: torch.Tensor, ratio: float, monkeypatch: pytest.MonkeyPatch | None = None,
           count: int | None = None) -> torch.Tensor:
    """vLLM's keep mask [F * T] at q = 1 - r; with `count`, its count function is replaced to return it."""
    module = MODULES[method]
    if count is not None:
        monkeypatch.setattr(module, "compute_retained_tokens_count", lambda *args, **kwargs: count)
    F, T, D = x.shape
    return module.compute_retention_mask(x.reshape(F * T, D), (F, 1, T), 1, 1.0 - ratio)


def target(x: torch.Tensor, ratio: float) -> int:
    return CompressionConfig(method="evs", retention_ratio=ratio).target_tokens(x.shape[0] * x.shape[1])


def assert_equal_up_to_ties(mine: torch.Tensor, vllm: torch.Tensor, scores: torch.Tensor) -> None:
    """Same count; the same decision on every token whose score no other token shares; the same kept scores."""
    values, counts = scores.unique(return_counts=True)
    tied = torch.isin(scores, values[counts > 1])
    assert int(mine.sum()) == int(vllm.sum())
    assert torch.equal(mine[~tied], vllm[~tied])
    assert torch.equal(scores[mine].sort().values, scores[vllm].sort().values)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("ratio", RATIOS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_evs_equals_vllm_at_our_count(monkeypatch: pytest.MonkeyPatch, shape: tuple[int, int, int], ratio: float,
                                      dtype: torch.dtype) -> None:
    x = features(*shape, dtype=dtype, seed=sum(shape))
    assert torch.equal(ours("evs", x, ratio), theirs("evs", x, ratio, monkeypatch, target(x, ratio)))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("ratio", RATIOS)
def test_vidcom2_equals_vllm_at_our_count(monkeypatch: pytest.MonkeyPatch, shape: tuple[int, int, int],
                                          ratio: float) -> None:
    """Exactly equal wherever no two scores are equal (every shape here but D = 1, whose unit tokens are +-1)."""
    x = features(*shape, seed=sum(shape))
    scores = vidcom2_scores(x)[0].reshape(-1)
    assert_equal_up_to_ties(ours("vidcom2", x, ratio), theirs("vidcom2", x, ratio, monkeypatch, target(x, ratio)),
                            scores)


@pytest.mark.parametrize("ratio", [0.05, 0.1, 0.5])
def test_vidcom2_bfloat16_equals_vllm_up_to_ties(monkeypatch: pytest.MonkeyPatch, ratio: float) -> None:
    """Channels scaled apart so their bf16 variances differ (tied variances would let vLLM's topk order the
    channels its own way, changing every sum after it); the scores themselves still tie heavily in bf16."""
    x = features(16, 49, 24, seed=3) * torch.logspace(0, 3, 24)
    x = x.to(torch.bfloat16)
    variances = x.reshape(-1, 24).var(dim=0, unbiased=False)
    assert variances.unique().numel() == 24
    scores = vidcom2_scores(x)[0].reshape(-1)
    assert scores.unique().numel() < scores.numel()  # the point of the test: ties exist
    assert_equal_up_to_ties(ours("vidcom2", x, ratio), theirs("vidcom2", x, ratio, monkeypatch, target(x, ratio)),
                            scores)


def tie_heavy(frames: int, tokens: int, dim: int, seed: int) -> torch.Tensor:
    """Every token one of 3 vectors, and frame 2 repeating frame 1: many exactly equal scores."""
    generator = torch.Generator().manual_seed(seed)
    palette = torch.randn(3, dim, generator=generator)
    x = palette[torch.randint(3, (frames, tokens), generator=generator)]
    x[2] = x[1]
    return x


@pytest.mark.parametrize("ratio", [0.05, 0.3, 0.7])
def test_tie_heavy_inputs(monkeypatch: pytest.MonkeyPatch, ratio: float) -> None:
    x = tie_heavy(12, 25, 8, seed=4)
    count = target(x, ratio)
    assert torch.equal(ours("evs", x, ratio), theirs("evs", x, ratio, monkeypatch, count))  # both stable sorts
    scores = vidcom2_scores(x)[0].reshape(-1)
    assert_equal_up_to_ties(ours("vidcom2", x, ratio), theirs("vidcom2", x, ratio, monkeypatch, count), scores)


@pytest.mark.parametrize("method", ["evs", "vidcom2"])
@pytest.mark.parametrize(("shape", "ratio"), [((32, 196, 64), 0.05), ((32, 196, 64), 0.1), ((8, 16, 32), 0.35),
                                              ((32, 196, 64), 0.001), ((5, 9, 7), 0.01), ((3, 4, 1), 1.0)])
def test_shipped_counts_differ_only_by_the_documented_tokens(method: str, shape: tuple[int, int, int],
                                                             ratio: float) -> None:
    """As shipped: both masks take a prefix of the same ranking (EVS) or reconcile the same per-frame picks by the
    same scores (VidCom2), so they are nested and differ by exactly |K - vLLM's count| tokens."""
    x = features(*shape, seed=sum(shape))
    F, T, _ = shape
    mine, vllm = ours(method, x, ratio), theirs(method, x, ratio)
    theirs_count = MODULES[method].compute_retained_tokens_count(T, F, 1.0 - ratio)
    assert int(vllm.sum()) == theirs_count and int(mine.sum()) == target(x, ratio)
    small, large = (mine, vllm) if int(mine.sum()) <= theirs_count else (vllm, mine)
    assert not (small & ~large).any()  # nested
    assert int((large & ~small).sum()) == abs(target(x, ratio) - theirs_count)


def test_count_rules_differ_where_documented() -> None:
    """int() vs round(): 5% of 32 x 196 = 313.6 -> vLLM 313, ours 314; below the floors vLLM stops at one frame
    (EVS: T tokens) or one token per frame (VidCom2: F tokens), ours goes on to K."""
    assert evs.compute_retained_tokens_count(196, 32, 1.0 - 0.05) == 313
    assert vidcom2.compute_retained_tokens_count(196, 32, 1.0 - 0.05) == 313
    assert CompressionConfig(method="evs", retention_ratio=0.05).target_tokens(32 * 196) == 314
    assert evs.compute_retained_tokens_count(196, 32, 1.0 - 0.001) == 196
    assert vidcom2.compute_retained_tokens_count(196, 32, 1.0 - 0.001) == 32
    assert CompressionConfig(method="evs", retention_ratio=0.001).target_tokens(32 * 196) == 6
