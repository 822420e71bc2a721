"""Synthetic inputs for benchmarks and tests: video features with semantic regions that persist across frames,
an H.264 clip, and prompt ids around the video placeholder.

Gaussian noise would make every token its own component at any useful tau; real post-projector features form
regions (objects, background) that move slowly and look alike from frame to frame. Here each frame is a 14x14
grid split into Voronoi regions whose seeds drift; every region has a feature vector that drifts slowly in time
and its own noise level, so tau 0.8-0.95 spans roughly 1-50% retention, as on real videos.

`size_spread` > 0 gives regions of very different sizes (a power diagram: large backgrounds next to small
objects), which makes the similarity graphs much denser.
"""
from __future__ import annotations

import torch

from llava.constants import IMAGE_TOKEN_INDEX


def region_video(
    frames: int = 32, grid: int = 14, dim: int = 896, regions: int = 64, noise: tuple[float, float] = (0.05, 0.4),
    size_spread: float = 0.0, seed: int = 0,
) -> torch.Tensor:
    """[frames, grid*grid, dim] float32 features with persistent regions; `noise` is the range of per-region
    noise levels (relative to unit-variance features)."""
    g = torch.Generator().manual_seed(seed)
    seeds = torch.rand(regions, 2, generator=g) * grid  # (R, 2) region centres on the grid
    velocity = (torch.rand(regions, 2, generator=g) - 0.5) * 0.3  # grid cells per frame
    base = torch.randn(regions, dim, generator=g)  # (R, D)
    drift = torch.cumsum(0.04 * torch.randn(frames, regions, dim, generator=g), dim=0)  # (F, R, D)
    noise_level = noise[0] + (noise[1] - noise[0]) * torch.rand(regions, generator=g)  # (R,) clean to noisy
    ys, xs = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    cells = torch.stack([ys, xs], dim=-1).view(-1, 2).float()  # (T, 2)
    t = torch.arange(frames, dtype=torch.float32)[:, None, None]
    centres = (seeds[None] + velocity[None] * t) % grid  # (F, R, 2)
    noise = torch.randn(frames, grid * grid, dim, generator=g)  # (F, T, D)
    weight = torch.empty(regions).exponential_(1.0, generator=g) * size_spread  # (R,) region size bonus
    distance = torch.cdist(cells[None].expand(frames, -1, -1), centres) ** 2 - weight  # (F, T, R)
    owner = distance.argmin(dim=-1)  # (F, T)
    signal = torch.gather(base[None] + drift, 1, owner[..., None].expand(-1, -1, dim))  # (F, T, D)
    return signal + noise * noise_level[owner][..., None]


def write_clip(path: str, frames: int = 96, width: int = 1280, height: int = 720, fps: int = 30) -> str:
    """An H.264 clip of a moving colour pattern at `path` (decoding cost like a real clip of that size; x264's
    ultrafast preset so writing it takes seconds)."""
    import av
    import numpy as np

    ys, xs = np.mgrid[0:height, 0:width]
    pattern = np.stack([xs % 256, ys % 256, ((xs + ys) // 3) % 256], axis=-1).astype(np.uint8)  # (H, W, 3)
    with av.open(path, "w") as container:
        stream = container.add_stream("libx264", rate=fps, options={"preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(np.roll(pattern, 4 * i, axis=1), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def prompt_ids(n: int, length: int, vocab: int, placeholder_at: int = 14) -> list[torch.Tensor]:
    """n different random prompts [length], each with one video placeholder (IMAGE_TOKEN_INDEX) at
    `placeholder_at` (after a system part of that many ids, as Qwen2's chat template puts it)."""
    if not 0 <= placeholder_at < length:
        raise ValueError(f"placeholder_at must be in [0, {length}), got {placeholder_at}")
    generator = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n):
        ids = torch.randint(0, vocab, (length,), generator=generator)  # (L,)
        ids[placeholder_at] = IMAGE_TOKEN_INDEX
        out.append(ids)
    return out
