"""Random-weight LLaVA-OneVision models at the real 0.5B / 7B shapes, for benchmarks (no download needed).

Widths, heads and vocabularies are the checkpoints' own (Qwen2-0.5B: 896 wide, 24 layers, 14 heads / 2 KV heads,
vocab 151936, tied head; Qwen2-7B: 3584 wide, 28 layers, 28 / 4 heads, vocab 152064; the SigLIP so400m tower
without its last layer: 1152 wide, 26 layers, 384 px, patch 14). Depth can be reduced where a CPU run would take
too long: per-layer cost is what scales, so a benchmark that reduces depth says so and scales by layer count.
`tiny` is for tests that run a benchmark end to end in seconds (its tower: 112 px, patch 14, 16 tokens per frame).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import Qwen2Config, SiglipVisionConfig

from llava.model.model_config import SO400M_VISION, ModelConfig
from llava.model.modeling import LlavaOnevisionVideoModel


@dataclass(frozen=True)
class Architecture:
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    vocab_size: int
    tie_word_embeddings: bool
    vision: dict[str, Any] = field(default_factory=lambda: dict(SO400M_VISION))  # SiglipVisionConfig fields

    @property
    def vision_layers(self) -> int:
        return self.vision["num_hidden_layers"]


TINY_VISION = dict(SO400M_VISION, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                   image_size=112)
ARCHITECTURES = {
    "0.5b": Architecture(896, 4864, 24, 14, 2, 151936, True),
    "7b": Architecture(3584, 18944, 28, 28, 4, 152064, False),
    "tiny": Architecture(64, 128, 2, 4, 2, 512, True, TINY_VISION),
}


def model_config(arch: str, vision_layers: int | None = None, text_layers: int | None = None) -> ModelConfig:
    """The config of `arch` with the checkpoints' default pooling; None layers = the real depth."""
    spec = ARCHITECTURES[arch]
    text = Qwen2Config(
        hidden_size=spec.hidden_size, intermediate_size=spec.intermediate_size,
        num_hidden_layers=text_layers or spec.num_hidden_layers, num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_key_value_heads, vocab_size=spec.vocab_size,
        tie_word_embeddings=spec.tie_word_embeddings, max_position_embeddings=32768, rope_theta=1000000.0,
    )
    vision = SiglipVisionConfig(**{**spec.vision, "num_hidden_layers": vision_layers or spec.vision_layers})
    return ModelConfig(text=text, vision=vision, source_format="original")


def random_model(arch: str, vision_layers: int | None = None, text_layers: int | None = None,
                 dtype: torch.dtype = torch.float32, seed: int = 0,
                 device: torch.device | str = "cpu") -> LlavaOnevisionVideoModel:
    """Our model with random weights at `arch`'s shapes on `device`; None layers = the real depth.

    The weights are drawn on `device` itself: drawing the 7B's on a CPU takes minutes where a GPU takes seconds.
    """
    config = model_config(arch, vision_layers, text_layers)
    torch.manual_seed(seed)
    with torch.device(device):
        model = LlavaOnevisionVideoModel(config, attn_implementation="sdpa")
    return model.to(dtype).eval()
