"""Video file -> pixel values -> pooled features, with frames sampled exactly as lmms-eval's `llava_onevision`.

lmms-eval's OneVision model samples `np.linspace(0, total - 1, max_frames_num, dtype=int)` over decord's frame
count; `llava.video.load_video` uses the same rule (and guards decord's known hangs), so both the lmms-eval model
and the calibration decode through here and see the same frames. A video that fails to decode raises
`VideoDecodeError` naming the file: the stock class answers such samples from the text alone.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from llava.run_config import VideoSection
from llava.runtime import frames_to_pixels
from llava.video import Backend, load_video

if TYPE_CHECKING:
    from llava.model.image_processor import SiglipVideoProcessor
    from llava.model.modeling import LlavaOnevisionVideoModel

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FrameSettings:
    """How a video is turned into frames: count and decoder (part of every cache key). The defaults are the run
    config's (`VideoSection`), so evaluation, calibration and the CLI sample the same frames unless told."""

    num_frames: int = VideoSection.frames
    backend: Backend = VideoSection.backend


def video_pixels(path: str | Path, processor: SiglipVideoProcessor, frames: FrameSettings) -> torch.Tensor:
    """Decode `frames.num_frames` uniformly sampled frames and preprocess them (`llava.runtime.frames_to_pixels`):
    pixel values [F, 3, S, S]."""
    decoded = load_video(path, frames.num_frames, frames.backend)
    if decoded.notes:
        logger.info("%s: %s", path, decoded.note)
    return frames_to_pixels(processor, decoded.frames)  # (F, 3, S, S)


@torch.no_grad()
def pooled_video(model: LlavaOnevisionVideoModel, processor: SiglipVideoProcessor, path: str | Path,
                 frames: FrameSettings) -> torch.Tensor:
    """Pooled features [F, T, D] of one video file (tower + projector + pool): what the compressor sees."""
    return model.pooled_features(video_pixels(path, processor, frames))  # (F, T, D)


def file_key(path: str | Path, *parts: object) -> str:
    """A cache key for a video file and the settings that shape what is computed from it: the resolved path,
    size and modification time (a rewritten file misses) plus `parts`."""
    resolved = Path(path).resolve()
    stat = resolved.stat()
    text = "|".join(str(p) for p in (resolved, stat.st_size, stat.st_mtime_ns, *parts))
    return hashlib.sha1(text.encode()).hexdigest()
