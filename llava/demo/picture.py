"""What compression did to each frame, as pictures: the `--visualize` drawing (`llava.visualize`), one image per
shown frame, so the page's gallery lays them out and each can be opened full size.

A patch merged into a kept token is blended with that token's colour (one colour across several frames is one
token merged across time); white lines separate different tokens. A patch a method drops (assignment -1, methods
whose `MethodSpec.merges` is False) is darkened instead: it reaches the language model in no token at all.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from llava.visualize import TILE, label_map, paint_frame, palette, shown_frames

DROPPED = (0, 0, 0)  # blended over a dropped patch: the frame shows through, darkened


def frame_caption(video_index: int, row: np.ndarray) -> str:
    """'video frame 12: 9 tokens' (+ ', 40 patches dropped'): how many kept tokens this frame's patches went into."""
    kept = row[row >= 0]
    dropped = int((row < 0).sum())
    caption = f"video frame {video_index}: {len(np.unique(kept))} tokens"
    return caption + (f", {dropped} patches dropped" if dropped else "")


def painted_frames(frames: np.ndarray, assignment: np.ndarray, video_indices: list[int],
                   tile: int = TILE) -> list[tuple[Image.Image, str]]:
    """frames uint8 [F, H, W, 3] + assignment [F, T] (kept-token index per patch, -1 = dropped) -> (picture,
    caption) for each shown frame (all of them up to `llava.visualize.MAX_FRAMES`, else evenly spaced ones)."""
    assignment = np.asarray(assignment)
    if frames.shape[0] != assignment.shape[0] or len(video_indices) != frames.shape[0]:
        raise ValueError(f"need one assignment row and one video index per frame, got {frames.shape[0]} frames, "
                         f"{assignment.shape[0]} rows, {len(video_indices)} indices")
    kept = int(assignment.max()) + 1 if (assignment >= 0).any() else 0
    colours = np.vstack([palette(kept), np.asarray([DROPPED], dtype=np.uint8)])  # (K + 1, 3); row K = dropped
    labels = np.where(assignment < 0, kept, assignment)  # (F, T)
    return [(paint_frame(frames[f], label_map(labels[f], tile), colours),
             frame_caption(video_indices[f], assignment[f])) for f in shown_frames(frames.shape[0])]
