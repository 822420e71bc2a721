"""Tokenization with the visual placeholder and small path helpers, with LLaVA-NeXT's names and behaviour.

The text around `<image>` is tokenized chunk by chunk (never the placeholder itself), so the ids of the text are
exactly what they would be without the image, and IMAGE_TOKEN_INDEX marks where the visual tokens go.
"""
from __future__ import annotations

from typing import Any

import torch

from llava.constants import DEFAULT_IMAGE_TOKEN, IMAGE_TOKEN_INDEX


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
