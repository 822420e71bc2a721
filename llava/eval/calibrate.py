"""Tau calibration: the SCC threshold whose mean retention over a benchmark's videos equals a target ratio.

The paper sets one tau per table row; the token count then varies per video and the row's "retention ratio" is
the mean over the benchmark. The per-row tau values are not published, and one tau gives very different
retention on different content, so tau is searched on the benchmark's own videos: vision + compression only (no
LLM), pooled features computed once and kept (in memory, optionally on disk), then bisection on tau, since a
higher tau cuts more edges and keeps more tokens. Several targets share the one vision pass.

    python -m llava.eval.calibrate --pretrained CKPT --task mvbench --target 0.35,0.10 [--sample 200 --seed 0]
    python -m llava.eval.calibrate --pretrained CKPT --videos a.mp4 b.mp4 --target 0.10
"""
from __future__ import annotations

import argparse
import json
import logging
import random
import statistics
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from llava.compression import CompressionConfig, compress
from llava.config_types import DTYPE_NAMES
from llava.eval.features import FrameSettings, file_key, pooled_video
from llava.run_config import ModelSection, VideoSection
from llava.video import BACKENDS

if TYPE_CHECKING:
    from llava.model.image_processor import SiglipVideoProcessor
    from llava.model.modeling import LlavaOnevisionVideoModel

logger = logging.getLogger(__name__)

TAU_RANGE = (-1.0, 1.0)  # cosine similarity: tau = 1 keeps every token, tau = -1 merges (almost) all
MIN_TAU_STEP = 1e-6


class CalibrationError(RuntimeError):
    """The target cannot be reached within the tolerance (the message gives the nearest reachable means)."""


@dataclass
class Calibration:
    """The result for one target: tau, the mean retention it gives, and how retention spreads over videos."""

    target: float
    tau: float
    mean: float
    tolerance: float
    videos: int
    spread: dict[str, float]
    steps: list[tuple[float, float]] = field(default_factory=list)  # (tau, mean retention) in search order
    epsilon: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def retentions(features: list[torch.Tensor], tau: float, epsilon: float | None, device: torch.device) -> list[float]:
    """Per-video retention (tokens out / tokens in) of SCC at `tau` on cached pooled features."""
    config = CompressionConfig(method="scc", tau=tau, epsilon=epsilon)
    return [compress(f.to(device), config).stats.retention for f in features]


def calibrate(features: list[torch.Tensor], target: float, tolerance: float = 0.005,
              epsilon: float | None = None, device: torch.device | str = "cpu") -> Calibration:
    """Bisect tau until the mean retention over `features` (one [F, T, D] per video) is within `tolerance` of
    `target`. Raises CalibrationError when the mean jumps over the target band (too few videos or tokens)."""
    if not features:
        raise ValueError("calibration needs at least one video's features")
    if not 0.0 < target <= 1.0:
        raise ValueError(f"target retention must be in (0, 1], got {target}")
    device = torch.device(device)
    lo, hi = TAU_RANGE
    steps: list[tuple[float, float]] = []
    best: tuple[float, float, list[float]] | None = None
    while hi - lo > MIN_TAU_STEP:
        tau = (lo + hi) / 2
        per_video = retentions(features, tau, epsilon, device)
        mean = sum(per_video) / len(per_video)
        steps.append((tau, mean))
        if best is None or abs(mean - target) < abs(best[1] - target):
            best = (tau, mean, per_video)
        if abs(mean - target) <= tolerance:
            return Calibration(target, tau, mean, tolerance, len(features), _spread(per_video), steps, epsilon)
        lo, hi = (tau, hi) if mean < target else (lo, tau)
    below = max((m for _, m in steps if m < target), default=None)
    above = min((m for _, m in steps if m > target), default=None)
    raise CalibrationError(
        f"no tau gives mean retention {target} +- {tolerance}: the mean jumps from {below} to {above} near "
        f"tau={best[0]:.6f}; use more videos (--sample) or a wider --tolerance")


def _spread(per_video: list[float]) -> dict[str, float]:
    ordered = sorted(per_video)
    return {"min": ordered[0], "max": ordered[-1], "median": statistics.median(ordered),
            "std": statistics.pstdev(ordered)}


class FeatureStore:
    """Pooled features per video, computed once: in memory, and under `cache_dir` when given (keyed by the file,
    the checkpoint and the frame settings), so the grid's several targets and reruns cost one vision pass."""

    def __init__(self, model: LlavaOnevisionVideoModel, processor: SiglipVideoProcessor, frames: FrameSettings,
                 checkpoint: str, cache_dir: Path | None = None) -> None:
        self.model, self.processor, self.frames = model, processor, frames
        self.checkpoint, self.cache_dir = checkpoint, cache_dir
        self.vision_passes = 0

    def features(self, path: str | Path) -> torch.Tensor:
        cached = self._cache_path(path)
        if cached is not None and cached.exists():
            return torch.load(cached)
        pooled = pooled_video(self.model, self.processor, path, self.frames).cpu()  # (F, T, D)
        self.vision_passes += 1
        if cached is not None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            torch.save(pooled, cached)
        return pooled

    def _cache_path(self, path: str | Path) -> Path | None:
        if self.cache_dir is None:
            return None
        key = file_key(path, self.checkpoint, self.frames.num_frames, self.frames.backend, self.model.dtype)
        return self.cache_dir / f"{key}.pt"


def task_videos(tasks: list[str], include_path: str | None = None) -> list[str]:
    """The distinct video files of lmms-eval tasks (groups expanded), in document order. Loads the tasks as
    lmms-eval does (its dataset download / cache rules apply)."""
    from lmms_eval.tasks import TaskManager, get_task_dict

    found: dict[str, None] = {}
    for task in _leaf_tasks(get_task_dict(tasks, TaskManager(include_path=include_path))):
        for doc in task.eval_docs:
            for visual in task.doc_to_visual(doc) or []:
                if not isinstance(visual, str):
                    raise ValueError(f"task {task.config.task} gives non-file visuals ({type(visual).__name__}); "
                                     "calibration reads video files only")
                found[visual] = None
    return list(found)


def _leaf_tasks(task_dict: dict) -> list[Any]:
    leaves = []
    for value in task_dict.values():
        leaves.extend(_leaf_tasks(value) if isinstance(value, dict) else [value])
    return leaves


def sample_videos(videos: list[str], sample: int | None, seed: int) -> list[str]:
    """All videos, or a seeded sample of `sample` of them (sorted first, so the sample does not depend on
    the order the task lists them in)."""
    if sample is None or sample >= len(videos):
        return list(videos)
    return random.Random(seed).sample(sorted(videos), sample)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Find the SCC tau whose mean retention over a benchmark's "
                                     "videos equals a target (vision + compression only).")
    parser.add_argument("--pretrained", required=True, help="checkpoint directory or hub id")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--task", help="lmms-eval task or group name(s), comma-separated")
    source.add_argument("--videos", nargs="+", help="video files")
    parser.add_argument("--include-path", default=None, help="extra lmms-eval task directory")
    parser.add_argument("--target", required=True, help="target mean retention(s), comma-separated, e.g. 0.35,0.1")
    parser.add_argument("--tolerance", type=float, default=0.005, help="|mean - target| allowed (default 0.005)")
    parser.add_argument("--sample", type=int, default=None, help="use a seeded sample of this many videos")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epsilon", type=float, default=None, help="approximate components (paper: 0.05)")
    parser.add_argument("--frames", type=int, default=VideoSection.frames,
                        help=f"frames per video (default: the run config's video.frames, {VideoSection.frames})")
    parser.add_argument("--backend", default=VideoSection.backend, choices=BACKENDS)
    parser.add_argument("--device", default=ModelSection.device, help="cuda, cuda:1, cpu (auto: CUDA when present)")
    parser.add_argument("--dtype", default=ModelSection.dtype, choices=DTYPE_NAMES,
                        help="auto: bf16 on CUDA and on native-bf16 CPUs, else fp32")
    parser.add_argument("--cache-dir", type=Path, default=None, help="keep pooled features here across runs")
    parser.add_argument("--out", type=Path, default=None, help="write the result(s) as JSON")
    return parser


def run(args: argparse.Namespace) -> list[Calibration]:
    """Load the model, compute features once, calibrate every target."""
    from llava.model.builder import load_pretrained_model

    targets = [float(t) for t in args.target.split(",")]
    videos = args.videos or task_videos(args.task.split(","), args.include_path)
    videos = sample_videos(videos, args.sample, args.seed)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    _, model, processor, _ = load_pretrained_model(args.pretrained, device_map=device, torch_dtype=args.dtype)
    store = FeatureStore(model, processor, FrameSettings(args.frames, args.backend), args.pretrained, args.cache_dir)
    features = [store.features(v) for v in videos]
    logger.info("%d videos, %d vision passes", len(videos), store.vision_passes)
    return [calibrate(features, t, args.tolerance, args.epsilon, model.device) for t in targets]


def format_result(result: Calibration) -> str:
    s = result.spread
    return (f"target {result.target:.4f}: tau {result.tau:.6f} -> mean retention {result.mean:.4f} "
            f"(+-{result.tolerance}) over {result.videos} videos; per video min {s['min']:.4f} median "
            f"{s['median']:.4f} max {s['max']:.4f} std {s['std']:.4f}; {len(result.steps)} steps")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        results = run(args)
    except (CalibrationError, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for result in results:
        print(format_result(result))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps([r.to_dict() for r in results], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
