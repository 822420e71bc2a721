"""Put visual tokens into the prompt: the one place where they enter the LLM input.

Each IMAGE_TOKEN_INDEX in a prompt is widened to as many placeholder positions as its visual block has tokens
(blocks may differ in length: compression keeps a different K per video), rows are LEFT padded to one length
(generation appends on the right), and `masked_scatter` writes every block into the placeholder positions at once,
after a count check that names both numbers.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from llava.compression import CompressionConfig
from llava.constants import IMAGE_TOKEN_INDEX


@dataclass
class PackedInputs:
    """LLM inputs for a batch: embeddings [B, L, D], attention_mask [B, L] (0 on left padding), position_ids
    [B, L] (counting from the first real token, as an unpadded prompt would); visual_mask [B, L] marks the
    visual blocks' positions. video_mask [B, L] (video tokens, newlines excluded) and in_llm (the config of an
    in-LLM compression method) are set by the model when the videos' method prunes inside the LLM."""

    inputs_embeds: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    visual_mask: torch.Tensor | None = None
    video_mask: torch.Tensor | None = None
    in_llm: CompressionConfig | None = None


def split_rows(input_ids: torch.Tensor | list[torch.Tensor], attention_mask: torch.Tensor | None) -> list[torch.Tensor]:
    """The real (unpadded) ids of each prompt: [L] -> one row; [B, L] with a mask -> rows without padding."""
    if isinstance(input_ids, (list, tuple)):
        return [torch.as_tensor(row, dtype=torch.long).reshape(-1) for row in input_ids]
    if input_ids.dim() == 1:
        input_ids = input_ids[None]  # (1, L)
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be [L] or [B, L], got shape {tuple(input_ids.shape)}")
    if attention_mask is None:
        return list(input_ids)
    if attention_mask.shape != input_ids.shape:
        raise ValueError(f"attention_mask {tuple(attention_mask.shape)} must match input_ids {tuple(input_ids.shape)}")
    return [row[mask.bool()] for row, mask in zip(input_ids, attention_mask, strict=True)]


def expand_placeholders(rows: list[torch.Tensor], block_sizes: list[int]) -> list[torch.Tensor]:
    """Repeat each placeholder id as many times as its block has tokens (blocks taken in row-major order)."""
    counts = [int((row == IMAGE_TOKEN_INDEX).sum()) for row in rows]
    if sum(counts) != len(block_sizes):
        raise ValueError(
            f"the prompts hold {sum(counts)} <image> placeholders but {len(block_sizes)} videos were given; pass "
            "one video per placeholder (tokenize with llava.mm_utils.tokenizer_image_token)"
        )
    sizes = torch.tensor(block_sizes, dtype=torch.long)
    expanded, start = [], 0
    for row, count in zip(rows, counts, strict=True):
        repeats = torch.ones_like(row, device="cpu")
        repeats[(row == IMAGE_TOKEN_INDEX).cpu()] = sizes[start:start + count]
        expanded.append(torch.repeat_interleave(row, repeats.to(row.device)))  # (L_i + sum(K) - count,)
        start += count
    return expanded


def left_pad(rows: list[torch.Tensor], pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack rows into ids [B, L] and mask [B, L], padding on the left."""
    length = max(row.numel() for row in rows)
    ids = torch.full((len(rows), length), pad_id, dtype=torch.long, device=rows[0].device)
    mask = torch.zeros((len(rows), length), dtype=torch.long, device=rows[0].device)
    for i, row in enumerate(rows):
        if row.numel():
            ids[i, -row.numel():] = row
            mask[i, -row.numel():] = 1
    return ids, mask


def pack_inputs(
    rows: list[torch.Tensor], blocks: list[torch.Tensor], embed_tokens: nn.Module
) -> PackedInputs:
    """Token ids with placeholders + visual blocks ([K_i, D] each) -> left-padded LLM inputs."""
    device = embed_tokens.weight.device
    rows = [row.to(device) for row in rows]
    ids, mask = left_pad(expand_placeholders(rows, [block.shape[0] for block in blocks]))  # (B, L), (B, L)
    placeholder = ids == IMAGE_TOKEN_INDEX  # (B, L)
    embeds = embed_tokens(ids.masked_fill(placeholder, 0))  # (B, L, D)
    if blocks:
        visual = torch.cat([block.to(device=device, dtype=embeds.dtype) for block in blocks])  # (sum K, D)
        n_slots = int(placeholder.sum())
        if n_slots != visual.shape[0]:
            raise ValueError(f"{n_slots} placeholder positions for {visual.shape[0]} visual tokens")
        embeds = embeds.masked_scatter(placeholder[..., None], visual)
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)  # (B, L)
    return PackedInputs(inputs_embeds=embeds, attention_mask=mask, position_ids=position_ids, visual_mask=placeholder)
