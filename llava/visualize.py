"""Pictures of what compression merged: sampled frames with each pooled patch coloured by its kept token.

`CompressionResult.assignment [F, T]` says, for every pooled token (T = side x side per frame), which of the K
kept tokens it was merged into. Painting each patch with the colour of its kept token, blended over the frame,
shows the semantic regions SCC found; one colour spanning several frames is a token merged across time. Patch
borders between different tokens are outlined so neighbouring regions with similar hues stay distinguishable.

PIL and numpy only (no matplotlib): the picture must be drawable wherever inference runs.
"""
from __future__ import annotations

import colorsys
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

GOLDEN_RATIO_CONJUGATE = 0.618033988749895
TILE = 192  # pixels per frame tile (frames are shown square, as the vision tower sees them)
PAD = 4
CAPTION = 14  # caption strip under each tile
HEADER = 18  # title strip on top (only with a title)
COLUMNS = 4
MAX_FRAMES = 8
ALPHA = 0.55  # weight of the colour over the frame
BORDER = (255, 255, 255)
DROPPED = (0, 0, 0)  # blended over a patch a method dropped (assignment -1): the frame shows through, darkened
BACKGROUND = (24, 24, 24)
TEXT = (235, 235, 235)


def palette(n: int) -> np.ndarray:
    """n distinct RGB colours [n, 3] uint8, deterministic: hues step by the golden ratio (consecutive tokens, which
    are spatial neighbours after SCC's ordering, get far-apart hues); saturation and value alternate."""
    colours = np.empty((n, 3), dtype=np.uint8)
    for i in range(n):
        hue = (i * GOLDEN_RATIO_CONJUGATE) % 1.0
        saturation = 0.85 if i % 2 == 0 else 0.6
        value = 0.95 if (i // 2) % 2 == 0 else 0.75
        colours[i] = [round(255 * c) for c in colorsys.hsv_to_rgb(hue, saturation, value)]
    return colours


def shown_frames(n_frames: int, max_frames: int = MAX_FRAMES) -> list[int]:
    """Which of the F sampled frames go in the picture: all when F <= max_frames, else evenly spaced ones."""
    if n_frames <= max_frames:
        return list(range(n_frames))
    return [int(i) for i in np.linspace(0, n_frames - 1, max_frames).round().astype(int)]


def grid_size(n_shown: int, columns: int = COLUMNS, tile: int = TILE, title: bool = True) -> tuple[int, int]:
    """(width, height) in pixels of a picture of `n_shown` frames (callers and tests can predict it)."""
    cols = min(columns, n_shown)
    rows = math.ceil(n_shown / cols)
    width = cols * tile + (cols + 1) * PAD
    height = rows * (tile + CAPTION) + (rows + 1) * PAD + (HEADER if title else 0)
    return width, height


def label_map(assignment_row: np.ndarray, tile: int) -> np.ndarray:
    """One frame's assignment [T] -> per-pixel kept-token labels [tile, tile] (nearest patch)."""
    side = math.isqrt(assignment_row.shape[0])
    if side * side != assignment_row.shape[0]:
        raise ValueError(f"{assignment_row.shape[0]} tokens per frame do not form a square patch grid")
    grid = assignment_row.reshape(side, side)  # (side, side)
    cells = np.arange(tile) * side // tile  # (tile,) patch index of each pixel row / column
    return grid[cells[:, None], cells[None, :]]  # (tile, tile)


def paint_frame(frame: np.ndarray, labels: np.ndarray, colours: np.ndarray, alpha: float = ALPHA) -> Image.Image:
    """A frame [H, W, 3] uint8 squashed to the label map's size, blended with its token colours, borders drawn."""
    tile = labels.shape[0]
    base = np.asarray(Image.fromarray(frame).convert("RGB").resize((tile, tile), Image.Resampling.BILINEAR))
    blended = (1.0 - alpha) * base.astype(np.float32) + alpha * colours[labels].astype(np.float32)  # (tile, tile, 3)
    edge = np.zeros(labels.shape, dtype=bool)
    edge[1:, :] |= labels[1:, :] != labels[:-1, :]
    edge[:, 1:] |= labels[:, 1:] != labels[:, :-1]
    blended[edge] = BORDER
    return Image.fromarray(blended.round().clip(0, 255).astype(np.uint8))


def draw_assignment_grid(
    frames: np.ndarray,
    assignment: np.ndarray,
    frame_labels: list[str] | None = None,
    title: str | None = None,
    max_frames: int = MAX_FRAMES,
    columns: int = COLUMNS,
    tile: int = TILE,
) -> Image.Image:
    """frames uint8 [F, H, W, 3] + assignment [F, T] (kept-token index per pooled patch, -1 where the method
    dropped it: darkened) -> one RGB picture.

    frame_labels: a caption per frame (e.g. its index in the video); title: a line on top (e.g. the budget).
    """
    assignment = np.asarray(assignment)
    if frames.ndim != 4 or assignment.ndim != 2 or frames.shape[0] != assignment.shape[0]:
        raise ValueError(
            f"need frames [F, H, W, 3] and assignment [F, T] with the same F, got {frames.shape} and "
            f"{assignment.shape}"
        )
    kept = int(assignment.max()) + 1 if (assignment >= 0).any() else 0
    colours = np.vstack([palette(kept), np.asarray([DROPPED], dtype=np.uint8)])  # (K + 1, 3); row K = dropped
    assignment = np.where(assignment < 0, kept, assignment)  # (F, T)
    picks = shown_frames(frames.shape[0], max_frames)
    width, height = grid_size(len(picks), columns, tile, title is not None)
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    top = PAD + (HEADER if title is not None else 0)
    if title is not None:
        draw.text((PAD, PAD), title, fill=TEXT)
    cols = min(columns, len(picks))
    for slot, f in enumerate(picks):
        x = PAD + (slot % cols) * (tile + PAD)
        y = top + (slot // cols) * (tile + CAPTION + PAD)
        canvas.paste(paint_frame(frames[f], label_map(assignment[f], tile), colours), (x, y))
        caption = frame_labels[f] if frame_labels is not None else f"frame {f}"
        draw.text((x, y + tile + 1), caption, fill=TEXT)
    return canvas


def save_assignment_grid(path: str | Path, frames: np.ndarray, assignment: np.ndarray, **kwargs: object) -> Path:
    """Draw (see `draw_assignment_grid`) and write a PNG to `path` (parent folders created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    draw_assignment_grid(frames, assignment, **kwargs).save(path, format="PNG")  # type: ignore[arg-type]
    return path
