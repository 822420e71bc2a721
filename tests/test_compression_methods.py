"""DyCoke (stage 1), EVS and VidCom2, the methods that drop tokens of the pooled features: against brute-force
references written from the methods' definitions (plain loops over frames and tokens, Python sorting with the
tie rule spelled out), the paper's DyCoke counts, the retention-ratio rules, config validation, dtypes, and the
front ends (run config, CLI, lmms-eval model_args) reaching them. vLLM's own functions: test_serving_pruning.py.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from llava import infer
from llava.compression import CompressionConfig, compress
from llava.demo_clip import make_demo_clip
from llava.eval.lmms_model import run_config_from_args
from llava.run_config import load_config

DROPPING = ("dycoke", "evs", "vidcom2")
TINY_TOKENS = 16  # tiny tower: 7x7 patches -> bilinear 4x4 per frame


def kept_mask(features: torch.Tensor, config: CompressionConfig) -> list[bool]:
    """compress() -> which flat tokens survived, after checking the output is exactly those tokens in order."""
    result = compress(features, config)
    flat = result.assignment.reshape(-1)
    kept = flat >= 0
    assert torch.equal(flat[kept], torch.arange(int(kept.sum())))  # kept tokens numbered in their original order
    assert (flat[~kept] == -1).all()
    working = features.float() if config.precision == "float32" else features
    assert torch.equal(result.tokens, working.reshape(-1, features.shape[-1])[kept].to(features.dtype))  # as kept
    return kept.tolist()


def cosine(a: list[float], b: list[float], floor: float) -> float:
    """cos(a, b) with each norm floored at `floor`, in float64 Python arithmetic."""
    norm_a = max(math.sqrt(sum(v * v for v in a)), floor)
    norm_b = max(math.sqrt(sum(v * v for v in b)), floor)
    return sum(u * v for u, v in zip(a, b, strict=True)) / (norm_a * norm_b)


def palette_features(frames: int, tokens: int, dim: int, colours: int, seed: int) -> torch.Tensor:
    """Tie-heavy features: every token is one of `colours` random vectors, so many similarities are exactly equal."""
    generator = torch.Generator().manual_seed(seed)
    palette = torch.randn(colours, dim, generator=generator, dtype=torch.float64)
    return palette[torch.randint(colours, (frames, tokens), generator=generator)]


def random_features(frames: int, tokens: int, dim: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(frames, tokens, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# ---- DyCoke: reference from the official loops --------------------------------------------------------------
def dycoke_reference(x: torch.Tensor, k: float) -> list[bool]:
    """Pairs (i, i+1) for even i; then groups of four, i = 0, 4, ... while i < F - 4, frame i+2 against frame i;
    a pruned frame keeps its int((1 - k) * T) least similar tokens (ties to the lower index); an odd F's last
    frame has no partner and stays whole."""
    F, T, _ = x.shape
    rows = x.tolist()
    keep = int((1 - k) * T)
    mask = [[True] * T for _ in range(F)]
    pairs = [(i, i + 1) for i in range(0, F - 1, 2)]
    groups = [(i, i + 2) for i in range(0, F - 4, 4)]
    for earlier, later in pairs + groups:
        similarity = [cosine(rows[later][t], rows[earlier][t], 1e-12) for t in range(T)]
        chosen = sorted(range(T), key=lambda t: (similarity[t], t))[:keep]
        mask[later] = [t in chosen for t in range(T)]
    return [kept for row in mask for kept in row]


@pytest.mark.parametrize(("k", "count"), [(0.7, 3098), (0.8, 2661), (0.9, 2201), (1.0, 1764)])
def test_dycoke_paper_counts_at_32_frames(k: float, count: int) -> None:
    x = random_features(32, 196, 8)
    mask = kept_mask(x, CompressionConfig(method="dycoke", dycoke_k=k))
    assert sum(mask) == count
    assert mask == dycoke_reference(x, k)
    frame_counts = torch.tensor(mask).view(32, 196).sum(1).tolist()
    whole = [f for f, n in enumerate(frame_counts) if n == 196]
    assert whole == [0, 4, 8, 12, 16, 20, 24, 28, 30]  # the official loop bound leaves frame 30 whole


@pytest.mark.parametrize(("frames", "tokens", "k"), [(1, 9, 0.5), (2, 9, 0.5), (5, 9, 0.3), (7, 16, 0.9),
                                                     (9, 4, 0.05), (33, 16, 0.7)])
def test_dycoke_matches_reference_on_any_frame_count(frames: int, tokens: int, k: float) -> None:
    x = random_features(frames, tokens, 6, seed=frames)
    assert kept_mask(x, CompressionConfig(method="dycoke", dycoke_k=k)) == dycoke_reference(x, k)


def test_dycoke_ties_go_to_the_lower_index() -> None:
    x = palette_features(12, 25, 4, colours=3, seed=1)
    mask = kept_mask(x, CompressionConfig(method="dycoke", dycoke_k=0.6))
    assert mask == dycoke_reference(x, 0.6)


def brute_force_keep(frames: int, tokens: int, target: int) -> int:
    """The dycoke count nearest `target` over a fine grid of k in (0, 1] (ties: the smaller count)."""
    pruned = len(range(0, frames - 1, 2)) + len(range(0, frames - 4, 4))
    counts = set()
    for step in range(1, 20001):
        keep = int((1 - step / 20000) * tokens)
        counts.add((frames - pruned) * tokens + pruned * keep)
    return min(counts, key=lambda c: (abs(c - target), c))


@pytest.mark.parametrize("ratio", [0.29, 0.3, 0.35, 0.42, 0.5, 0.8, 1.0])
def test_dycoke_ratio_picks_the_nearest_count(ratio: float) -> None:
    x = random_features(32, 196, 4)
    mask = kept_mask(x, CompressionConfig(method="dycoke", retention_ratio=ratio))
    assert sum(mask) == brute_force_keep(32, 196, round(ratio * 32 * 196))


def test_dycoke_ratio_against_the_paper_rows() -> None:
    """35% lands on the paper's k = 0.9 row; 50% does not land on its k = 0.7 row (3,098 is 38 tokens off 3,136,
    while 60 per pruned frame gives 3,144, 8 off): a ratio is matched by count, set dycoke_k for the paper's k."""
    x = random_features(32, 196, 4)
    assert sum(kept_mask(x, CompressionConfig(method="dycoke", retention_ratio=0.35))) == 2201
    assert sum(kept_mask(x, CompressionConfig(method="dycoke", retention_ratio=0.5))) == 3144


@pytest.mark.parametrize(("frames", "tokens", "floor", "percent"), [(32, 196, 1764, "28.1%"), (8, 16, 48, "37.5%")])
def test_dycoke_below_its_floor_raises_naming_it(frames: int, tokens: int, floor: int, percent: str) -> None:
    x = random_features(frames, tokens, 4)
    with pytest.raises(ValueError, match=rf"fewer than {floor} of {frames * tokens} tokens \({percent}\) at "
                                         rf"F={frames}, T={tokens}"):
        compress(x, CompressionConfig(method="dycoke", retention_ratio=0.2))


def test_dycoke_single_frame_is_never_pruned() -> None:
    x = random_features(1, 9, 4)
    assert kept_mask(x, CompressionConfig(method="dycoke", retention_ratio=1.0)) == [True] * 9
    with pytest.raises(ValueError, match=r"fewer than 9 of 9 tokens \(100.0%\) at F=1, T=9"):
        compress(x, CompressionConfig(method="dycoke", retention_ratio=0.9))


# ---- EVS and VidCom2: references from the definitions -------------------------------------------------------
def evs_reference(x: torch.Tensor, count: int) -> list[bool]:
    """Score = 1 - cos to the same position one frame earlier (norms floored at 1e-8), frame 0 first; the
    `count` highest scores, ties to the lower index."""
    F, T, _ = x.shape
    rows = x.tolist()
    score = [math.inf if f == 0 else 1 - cosine(rows[f][t], rows[f - 1][t], 1e-8) for f in range(F) for t in range(T)]
    chosen = set(sorted(range(F * T), key=lambda i: (-score[i], i))[:count])
    return [i in chosen for i in range(F * T)]


def affinity(token: list[float], centre: list[float]) -> float:
    squared = sum((u - v) ** 2 for u, v in zip(token, centre, strict=True))
    return sum(math.exp(-squared / (2 * a)) for a in (1 / 8, 1 / 4, 1 / 2, 1, 2))


def vidcom2_reference(x: torch.Tensor, ratio: float, count: int) -> list[bool]:
    """Lowest-variance half of the channels; unit tokens; affinity to the video mean plus to the frame mean;
    per-frame budgets round(min(1, r (1 + p_f - mean p)) T) in [1, T] with p = softmax(-mean video affinity / 0.01);
    each frame's lowest scores; then the total reconciled to `count` by score (ties to the lower index)."""
    F, T, D = x.shape
    flat = x.reshape(F * T, D).tolist()
    means = [sum(row[c] for row in flat) / (F * T) for c in range(D)]
    variances = [sum((row[c] - means[c]) ** 2 for row in flat) / (F * T) for c in range(D)]
    channels = sorted(range(D), key=lambda c: (variances[c], c))[: max(1, D // 2)]
    unit = []
    for row in flat:
        picked = [row[c] for c in channels]
        norm = max(math.sqrt(sum(v * v for v in picked)), 1e-12)
        unit.append([v / norm for v in picked])
    video_centre = [sum(u[c] for u in unit) / (F * T) for c in range(len(channels))]
    score, video_part = [], []
    for f in range(F):
        frame = unit[f * T:(f + 1) * T]
        frame_centre = [sum(u[c] for u in frame) / T for c in range(len(channels))]
        for u in frame:
            video_part.append(affinity(u, video_centre))
            score.append(video_part[-1] + affinity(u, frame_centre))
    frame_score = [-sum(video_part[f * T:(f + 1) * T]) / T for f in range(F)]
    top = max(frame_score)
    weights = [math.exp((s - top) / 0.01) for s in frame_score]
    share = [w / sum(weights) for w in weights]
    kept = set()
    for f in range(F):
        budget = min(T, max(1, round(min(1.0, ratio * (1 + share[f] - sum(share) / F)) * T)))
        kept |= set(sorted(range(f * T, (f + 1) * T), key=lambda i: (score[i], i))[:budget])
    by_score = sorted(range(F * T), key=lambda i: (score[i], i))
    if len(kept) > count:
        kept = set([i for i in by_score if i in kept][:count])
    else:
        kept |= set([i for i in by_score if i not in kept][: count - len(kept)])
    return [i in kept for i in range(F * T)]


SHAPES = [(1, 9, 5), (4, 16, 8), (7, 9, 6), (16, 16, 12)]
RATIOS = [0.01, 0.1, 0.35, 0.5, 0.9, 1.0]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("ratio", RATIOS)
def test_evs_matches_reference(shape: tuple[int, int, int], ratio: float) -> None:
    x = random_features(*shape, seed=sum(shape))
    config = CompressionConfig(method="evs", retention_ratio=ratio, precision="input")
    assert kept_mask(x, config) == evs_reference(x, config.target_tokens(shape[0] * shape[1]))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("ratio", RATIOS)
def test_vidcom2_matches_reference(shape: tuple[int, int, int], ratio: float) -> None:
    x = random_features(*shape, seed=sum(shape))
    config = CompressionConfig(method="vidcom2", retention_ratio=ratio, precision="input")
    assert kept_mask(x, config) == vidcom2_reference(x, ratio, config.target_tokens(shape[0] * shape[1]))


@pytest.mark.parametrize("method", ["evs", "vidcom2"])
def test_tie_heavy_features_keep_the_lower_index(method: str) -> None:
    x = palette_features(8, 16, 4, colours=3, seed=2)
    x[3] = x[2]  # a repeated frame: every EVS score of frame 3 is 0
    config = CompressionConfig(method=method, retention_ratio=0.3, precision="input")
    count = config.target_tokens(8 * 16)
    expected = evs_reference(x, count) if method == "evs" else vidcom2_reference(x, 0.3, count)
    assert kept_mask(x, config) == expected


def test_evs_below_one_frame_keeps_the_first_frames_first_tokens() -> None:
    x = random_features(8, 16, 4)
    mask = kept_mask(x, CompressionConfig(method="evs", retention_ratio=0.05))  # K = 6 < T
    assert mask == [i < 6 for i in range(8 * 16)]


def test_vidcom2_below_one_token_per_frame_keeps_exactly_k() -> None:
    x = random_features(16, 16, 8)
    assert sum(kept_mask(x, CompressionConfig(method="vidcom2", retention_ratio=0.02))) == 5  # K = 5 < F


# ---- all three: exact counts, dtypes, determinism -----------------------------------------------------------
def dropping_config(method: str, ratio: float = 0.5) -> CompressionConfig:
    return CompressionConfig(method=method, retention_ratio=ratio)


@pytest.mark.parametrize("method", DROPPING)
def test_float32_and_bfloat16_features(method: str) -> None:
    x = random_features(8, 16, 8).to(torch.bfloat16)
    result = compress(x, dropping_config(method))
    assert result.tokens.dtype == torch.bfloat16 and result.stats.tokens_out == result.tokens.shape[0]
    assert kept_mask(x, dropping_config(method)) == kept_mask(x.float(), dropping_config(method))  # float32 work
    input_precision = CompressionConfig(method=method, retention_ratio=0.5, precision="input")
    assert sum(kept_mask(x, input_precision)) == sum(kept_mask(x.float(), input_precision))


@pytest.mark.parametrize("method", ["evs", "vidcom2"])
def test_ratio_methods_keep_exactly_k(method: str) -> None:
    for frames, tokens, ratio in [(32, 196, 0.1), (32, 196, 0.05), (5, 9, 0.33), (3, 4, 1.0)]:
        x = random_features(frames, tokens, 4, seed=frames)
        config = dropping_config(method, ratio)
        assert sum(kept_mask(x, config)) == config.target_tokens(frames * tokens)


@pytest.mark.parametrize("method", DROPPING)
def test_deterministic(method: str) -> None:
    x = random_features(9, 16, 8).float()
    first, second = compress(x, dropping_config(method)), compress(x.clone(), dropping_config(method))
    assert torch.equal(first.tokens, second.tokens) and torch.equal(first.assignment, second.assignment)


# ---- configuration --------------------------------------------------------------------------------------------
def test_bad_knobs_name_the_allowed_values() -> None:
    with pytest.raises(ValueError, match=r"dycoke_k is a knob of method 'dycoke', not of 'scc'; 'scc' takes "
                                         r"\['epsilon'\]"):
        CompressionConfig(method="scc", tau=0.9, dycoke_k=0.7)
    with pytest.raises(ValueError, match=r"epsilon is a knob of method 'scc', not of 'dycoke'; 'dycoke' takes "
                                         r"\['dycoke_k', 'dycoke_l', 'dycoke_p'\]"):
        CompressionConfig(method="dycoke", dycoke_k=0.7, epsilon=0.1)
    with pytest.raises(ValueError, match=r"dycoke_k is a knob of method 'dycoke', not of 'evs'; 'evs' takes no knobs"):
        CompressionConfig(method="evs", retention_ratio=0.1, dycoke_k=0.7)
    for k in (0.0, -0.1, 1.5, math.nan):
        with pytest.raises(ValueError, match=r"compression.dycoke_k must be in \(0, 1\]"):
            CompressionConfig(method="dycoke", dycoke_k=k)
    with pytest.raises(ValueError, match=r"set retention_ratio or dycoke_k \(exactly one"):
        CompressionConfig(method="dycoke", dycoke_k=0.7, retention_ratio=0.5)
    with pytest.raises(ValueError, match=r"set retention_ratio or dycoke_k"):
        CompressionConfig(method="dycoke")
    with pytest.raises(ValueError, match=r"set retention_ratio \(exactly one"):
        CompressionConfig(method="vidcom2", tau=0.9)


def test_run_config_reaches_every_method(tmp_path: Path) -> None:
    path = tmp_path / "dycoke.yaml"
    path.write_text("compression: {method: dycoke, dycoke_k: 0.9}\n")
    assert load_config(path).compression == CompressionConfig(method="dycoke", dycoke_k=0.9)
    for method in ("evs", "vidcom2"):
        config = load_config(None, {"compression.method": method, "compression.retention_ratio": 0.1})
        assert config.compression == CompressionConfig(method=method, retention_ratio=0.1)
    config = run_config_from_args("llava-ov-0.5b-scissor", {"method": "dycoke", "dycoke_k": 0.7})
    assert config.compression.dycoke_k == 0.7 and config.compression.retention_ratio is None


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_demo_clip(tmp_path_factory.mktemp("clip") / "clip.mp4", num_frames=8, size=(48, 40), fps=8)


@pytest.mark.parametrize(("flags", "tokens_after"), [
    (["--method", "dycoke", "--dycoke-k", "0.9"], 2 * TINY_TOKENS + 3 * 1),  # F = 5: 0 and 4 whole; 1, 2, 3 keep 1
    (["--method", "evs", "--retention-ratio", "0.1"], 8),
    (["--method", "vidcom2", "--retention-ratio", "0.1"], 8),
])
def test_cli_runs_each_method(capsys: pytest.CaptureFixture[str], tiny_original_dir: Path, clip: Path,
                              tmp_path: Path, flags: list[str], tokens_after: int) -> None:
    picture = tmp_path / "merge.png"
    code = infer.main(["--model", str(tiny_original_dir), "--video", str(clip), "--device", "cpu", "--frames", "5",
                       "--max-new-tokens", "2", "--json", "--visualize", str(picture), *flags])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["tokens_before"] == 5 * TINY_TOKENS and report["tokens_after"] == tokens_after
    assert report["compression_stats"]["method"] == flags[1] and picture.is_file()
