"""LLaVA-NeXT's `llava.mm_utils` names with their behaviour: tokenization with the visual placeholder, frame lists
to pixel tensors (`process_images`), the keywords stopping criterion, and a path helper.

lmms-eval's `llava_onevision` class and LLaVA-Scissor's quick start import these four names. The text around
`<image>` is tokenized chunk by chunk (never the placeholder itself), so the ids of the text are exactly what they
would be without the image, and IMAGE_TOKEN_INDEX marks where the visual tokens go. `KeywordsStoppingCriteria`
is loaded on first use (it lives in `llava.stopping`): transformers' generation code costs over a second to import.
"""
from __future__ import annotations

from typing import Any

import torch
from PIL import Image

from llava.constants import DEFAULT_IMAGE_TOKEN, IMAGE_TOKEN_INDEX

# image_aspect_ratio values of LLaVA-NeXT's image path (tiling into patches); this package runs the video path only
TILED_ASPECT_RATIOS = ("anyres", "highres", "crop_split")


def tokenizer_image_token(
    prompt: str, tokenizer: Any, image_token_index: int = IMAGE_TOKEN_INDEX, return_tensors: str | None = None
) -> list[int] | torch.Tensor:
    """Token ids of `prompt` with `image_token_index` where each `<image>` was.

    A BOS the tokenizer puts at the start of every chunk is kept once, at the very start (Qwen has no BOS, so
    this is a no-op there, as in LLaVA-NeXT).
    """
    chunks = [tokenizer(chunk).input_ids for chunk in prompt.split(DEFAULT_IMAGE_TOKEN)]
    bos = getattr(tokenizer, "bos_token_id", None)
    ids: list[int] = []
    offset = 0
    if bos is not None and chunks and chunks[0] and chunks[0][0] == bos:
        ids.append(bos)
        offset = 1
    for i, chunk in enumerate(chunks):
        if i > 0:
            ids.append(image_token_index)
        ids.extend(chunk[offset:])
    if return_tensors is None:
        return ids
    if return_tensors == "pt":
        return torch.tensor(ids, dtype=torch.long)
    raise ValueError(f"return_tensors must be None or 'pt', got {return_tensors!r}")


def get_model_name_from_path(model_path: str) -> str:
    """Last path component (or `parent_checkpoint-N` for trainer checkpoints), as LLaVA-NeXT names models."""
    parts = model_path.strip("/").split("/")
    if parts[-1].startswith("checkpoint-") and len(parts) > 1:
        return parts[-2] + "_" + parts[-1]
    return parts[-1]


def expand_to_square(image: Image.Image, fill: tuple[int, int, int]) -> Image.Image:
    """The image centred on a square canvas of its longer side, the rest filled with `fill` (RGB)."""
    image = image.convert("RGB")
    width, height = image.size
    side = max(width, height)
    if width == height:
        return image
    canvas = Image.new("RGB", (side, side), fill)
    canvas.paste(image, ((side - width) // 2, (side - height) // 2))
    return canvas


def process_images(images: list[Image.Image], image_processor: Any, model_config: Any) -> torch.Tensor:
    """PIL images (lmms-eval's frame-list videos) -> pixel values [N, 3, S, S], stacked, as LLaVA-NeXT does it.

    `model_config.image_aspect_ratio == "pad"` (what lmms-eval sets for several frames): each image is first
    expanded to a square filled with the processor's mean colour, so the resize keeps its aspect ratio. Any other
    value without tiling (None, "square"): plain resize. The tiled image modes (anyres...) raise: this package runs
    LLaVA-OneVision's video path only.
    """
    aspect = getattr(model_config, "image_aspect_ratio", None)  # any config object, as upstream accepts
    if aspect is not None and any(aspect.startswith(mode) for mode in TILED_ASPECT_RATIOS):
        raise ValueError(
            f"process_images: image_aspect_ratio {aspect!r} is LLaVA-OneVision's tiled image path, which this package "
            "does not run (video only). Use video tasks (a video file, or frames with image_aspect_ratio 'pad')"
        )
    images = [images] if isinstance(images, Image.Image) else list(images)
    if not images or not all(isinstance(image, Image.Image) for image in images):
        kinds = sorted({type(image).__name__ for image in images})
        raise TypeError(f"process_images takes a non-empty list of PIL images, got {kinds or 'an empty list'}")
    if aspect == "pad":
        fill = tuple(int(channel * 255) for channel in image_processor.image_mean)
        images = [expand_to_square(image, fill) for image in images]
    return image_processor.preprocess(images, return_tensors="pt")["pixel_values"]  # (N, 3, S, S)


def __getattr__(name: str) -> Any:
    """`KeywordsStoppingCriteria` on first access (PEP 562), so importing this module stays light."""
    if name == "KeywordsStoppingCriteria":
        from llava.stopping import KeywordsStoppingCriteria

        return KeywordsStoppingCriteria
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
