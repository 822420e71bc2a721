"""SigLIP preprocessing for video frames, as LLaVA-NeXT's own SigLipImageProcessor does it.

PIL bicubic resize of each frame straight to S x S (no aspect keeping, no crop), rescale by 1/255, normalise with
mean = std = 0.5. PIL rather than torchvision: it is the resize the published numbers were made with, and
torchvision is not a dependency (its PyPI wheels are CUDA builds that replace a CPU torch).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image

SIGLIP_MEAN = (0.5, 0.5, 0.5)
SIGLIP_STD = (0.5, 0.5, 0.5)


class SiglipVideoProcessor:
    """Frames (uint8 [F, H, W, 3] array, one [H, W, 3] array, or a list of PIL images / arrays) -> pixel_values."""

    def __init__(
        self,
        image_size: int = 384,
        image_mean: tuple[float, float, float] = SIGLIP_MEAN,
        image_std: tuple[float, float, float] = SIGLIP_STD,
        rescale_factor: float = 1 / 255,
    ) -> None:
        self.image_size = image_size
        self.size = {"height": image_size, "width": image_size}
        self.crop_size = dict(self.size)  # read by some LLaVA-NeXT callers to build dummy frames
        self.image_mean = image_mean
        self.image_std = image_std
        self.rescale_factor = rescale_factor

    def preprocess(self, images: Any, return_tensors: str | None = "pt") -> dict[str, Any]:
        """{"pixel_values": [F, 3, S, S] float32}, a torch tensor for return_tensors="pt", else numpy."""
        frames = [self._frame(image) for image in _as_frames(images)]  # F x (S, S, 3)
        pixels = np.stack(frames).transpose(0, 3, 1, 2)  # (F, 3, S, S)
        if return_tensors == "pt":
            return {"pixel_values": torch.from_numpy(np.ascontiguousarray(pixels))}
        if return_tensors in (None, "np"):
            return {"pixel_values": pixels}
        raise ValueError(f"return_tensors must be 'pt', 'np' or None, got {return_tensors!r}")

    __call__ = preprocess

    def _frame(self, image: Image.Image) -> np.ndarray:
        resized = image.convert("RGB").resize((self.image_size, self.image_size), Image.Resampling.BICUBIC)
        pixels = np.asarray(resized, dtype=np.float32) * np.float32(self.rescale_factor)  # (S, S, 3)
        mean = np.asarray(self.image_mean, dtype=np.float32)
        std = np.asarray(self.image_std, dtype=np.float32)
        return (pixels - mean) / std


def _as_frames(images: Any) -> list[Image.Image]:
    if isinstance(images, Image.Image):
        return [images]
    if isinstance(images, torch.Tensor):
        images = images.cpu().numpy()
    if isinstance(images, np.ndarray):
        if images.ndim == 3:
            images = images[None]  # (1, H, W, 3)
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise ValueError(f"frames must be uint8 [F, H, W, 3] RGB, got {images.dtype} {images.shape}")
        return [Image.fromarray(frame) for frame in images]
    frames = list(images)
    if not frames:
        raise ValueError("no frames to preprocess: pass at least one frame")
    return [f if isinstance(f, Image.Image) else _as_frames(np.asarray(f))[0] for f in frames]
