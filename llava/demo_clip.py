"""A tiny synthetic demo video, so the pipeline can run end to end without downloading any footage.

The clip is a static scene (a vertical colour gradient, a "floor" band and two fixed blocks) with two coloured
shapes moving across it. Most regions persist from frame to frame, which is what token compression merges;
the moving shapes give it something that must survive. Written with PyAV (h264 when available, else mpeg4).

Usage: ``python -m llava.demo_clip OUT.mp4 [--num-frames 48] [--width 160] [--height 120] [--fps 8]``
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import av
import numpy as np

logger = logging.getLogger(__name__)

_CODECS = ("libx264", "h264", "mpeg4")  # first one this PyAV build can encode wins


def _background(height: int, width: int) -> np.ndarray:
    """The static part of the scene: (H, W, 3) uint8."""
    rows = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]  # (H, 1)
    image = np.empty((height, width, 3), dtype=np.float32)
    image[..., 0] = 40 + 60 * rows  # sky fades from dark blue to lighter
    image[..., 1] = 70 + 90 * rows
    image[..., 2] = 160 + 80 * rows
    floor = int(height * 0.75)
    image[floor:] = (90, 140, 60)  # green floor band
    image[floor - height // 5:floor, width // 10:width // 10 + width // 8] = (120, 80, 50)  # brown block
    image[floor - height // 4:floor, width - width // 4:width - width // 8] = (200, 200, 210)  # grey block
    return image.astype(np.uint8)


def render_frame(background: np.ndarray, index: int, num_frames: int) -> np.ndarray:
    """Frame `index`: a red disc moving left to right and a yellow square moving top to bottom. (H, W, 3)."""
    height, width, _ = background.shape
    frame = background.copy()
    t = index / max(num_frames - 1, 1)
    radius = max(height // 8, 2)
    cx, cy = int(radius + t * (width - 2 * radius)), int(height * 0.6)
    yy, xx = np.ogrid[:height, :width]
    frame[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2] = (220, 40, 40)
    side = max(height // 6, 2)
    top, left = int(t * (height - side)), width // 2
    frame[top:top + side, left:left + side] = (240, 210, 30)
    return frame


def _pick_codec() -> str:
    for codec in _CODECS:
        if codec in av.codecs_available:
            return codec
    raise RuntimeError(f"PyAV has none of the encoders {_CODECS}")


def make_demo_clip(path: str | Path, num_frames: int = 48, size: tuple[int, int] = (160, 120),
                   fps: int = 8) -> Path:
    """Write the demo clip to `path` (size is (width, height), both even for yuv420p) and return the path."""
    width, height = size
    if num_frames < 1 or width < 2 or height < 2 or width % 2 or height % 2 or fps < 1:
        raise ValueError(f"need num_frames >= 1, even width/height >= 2, fps >= 1; got {num_frames}, {size}, {fps}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    codec = _pick_codec()
    background = _background(height, width)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if codec in ("libx264", "h264"):
            stream.options = {"crf": "28", "preset": "medium"}
        for index in range(num_frames):
            frame = av.VideoFrame.from_ndarray(render_frame(background, index, num_frames), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())  # flush
    logger.info("wrote %s (%d frames, %dx%d, %d fps, %s, %d bytes)", path, num_frames, width, height, fps, codec,
                path.stat().st_size)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write a small synthetic demo video.")
    parser.add_argument("out", type=Path)
    parser.add_argument("--num-frames", type=int, default=48)
    parser.add_argument("--width", type=int, default=160)
    parser.add_argument("--height", type=int, default=120)
    parser.add_argument("--fps", type=int, default=8)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    make_demo_clip(args.out, args.num_frames, (args.width, args.height), args.fps)


if __name__ == "__main__":
    main()
