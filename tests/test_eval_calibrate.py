"""Tau calibration on generated videos: reaches the target mean, is monotone, costs one vision pass."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from llava.compression import CompressionConfig
from llava.demo_clip import make_demo_clip
from llava.eval.calibrate import CalibrationError, FeatureStore, calibrate, main, sample_videos
from llava.eval.features import FrameSettings, video_pixels

FRAMES = FrameSettings(num_frames=6, backend="pyav")
TOLERANCE = 0.01


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    out = tmp_path_factory.mktemp("calib_videos")
    return [make_demo_clip(out / f"v{i}.mp4", num_frames=10 + 5 * i, size=(48 + 16 * i, 40 + 8 * i), fps=8)
            for i in range(3)]


@pytest.fixture(scope="module")
def features(tiny_model_bundle, videos: list[Path]) -> list[torch.Tensor]:
    _, model, processor, _ = tiny_model_bundle
    store = FeatureStore(model, processor, FRAMES, "tiny")
    feats = [store.features(v) for v in videos]
    assert store.vision_passes == len(videos)
    return feats


def test_targets_reached_and_tau_monotone(features: list[torch.Tensor]) -> None:
    results = [calibrate(features, target, TOLERANCE) for target in (0.1, 0.3, 0.6)]
    for result in results:
        assert abs(result.mean - result.target) <= TOLERANCE
        assert result.spread["min"] <= result.mean <= result.spread["max"]
    taus = [r.tau for r in results]
    assert taus == sorted(taus)
    curve = sorted(step for r in results for step in r.steps)  # (tau, mean) seen during the searches
    means = [mean for _, mean in curve]
    assert means == sorted(means), "mean retention must not fall as tau rises"


def test_calibrated_tau_gives_that_retention_through_the_model(tiny_model_bundle, tiny_model, features,
                                                               videos) -> None:
    """Brute force: run each video through the model's own path at the calibrated tau (pixels -> tokens)."""
    result = calibrate(features, 0.3, TOLERANCE)
    pixels = [video_pixels(v, tiny_model_bundle[2], FRAMES) for v in videos]
    compression = CompressionConfig(method="scc", tau=result.tau)
    kept = [tiny_model.encode_video(p, compression).stats.retention for p in pixels]
    assert sum(kept) / len(kept) == pytest.approx(result.mean, abs=1e-9)


def test_unreachable_target_raises_with_the_nearest_means(features: list[torch.Tensor]) -> None:
    tokens = features[0].shape[0] * features[0].shape[1]
    with pytest.raises(CalibrationError, match="jumps from"):
        calibrate(features[:1], 0.5 + 0.5 / tokens, tolerance=1e-6)


def test_feature_cache_on_disk(tiny_model_bundle, videos: list[Path], tmp_path: Path) -> None:
    _, model, processor, _ = tiny_model_bundle
    first = FeatureStore(model, processor, FRAMES, "tiny", tmp_path)
    a = first.features(videos[0])
    again = FeatureStore(model, processor, FRAMES, "tiny", tmp_path)
    assert torch.equal(again.features(videos[0]), a) and again.vision_passes == 0
    other = FeatureStore(model, processor, FrameSettings(4, "pyav"), "tiny", tmp_path)
    assert other.features(videos[0]).shape[0] == 4 and other.vision_passes == 1


def test_seeded_sample() -> None:
    names = [f"v{i}" for i in range(10)]
    assert sample_videos(names, 4, 0) == sample_videos(list(reversed(names)), 4, 0)
    assert sample_videos(names, None, 0) == names
    assert len(set(sample_videos(names, 4, 0))) == 4


def test_cli(tiny_original_dir: Path, videos: list[Path], tmp_path: Path, capsys) -> None:
    out = tmp_path / "calibration.json"
    code = main(["--pretrained", str(tiny_original_dir), "--videos", *map(str, videos), "--target", "0.2,0.5",
                 "--tolerance", str(TOLERANCE), "--frames", "6", "--backend", "pyav", "--device", "cpu",
                 "--out", str(out)])
    assert code == 0
    results = json.loads(out.read_text())
    assert [r["target"] for r in results] == [0.2, 0.5]
    assert all(abs(r["mean"] - r["target"]) <= TOLERANCE for r in results)
    assert "tau" in capsys.readouterr().out
    assert main(["--pretrained", str(tiny_original_dir), "--videos", str(tmp_path / "missing.mp4"),
                 "--target", "0.2", "--device", "cpu"]) == 2
