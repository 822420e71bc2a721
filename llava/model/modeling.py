"""LLaVA-OneVision's video path on transformers parts, with LLaVA-Scissor compression between pooling and the LLM.

`video -> SigLIP tower (last layer before post_layernorm) -> projector -> bilinear pool -> compress -> newline ->
spliced at the <image> placeholder -> Qwen2`. Follows LLaVA-NeXT's llava_arch.py video branch and transformers'
LlavaOnevision `get_video_features` (reference/ecosystem.md 2, 3.2); composed from SiglipVisionModel and
Qwen2ForCausalLM, not inherited. Each stage is its own method so it can be tested, timed and swapped.

Shape legend: B batch, F frames, P patches per frame, T tokens per frame after pooling, K kept tokens,
D hidden size (LLM), V vision hidden size, L text length.
"""
from __future__ import annotations

import copy
import logging
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, AutoModelForCausalLM

from llava.compression import CompressionConfig, CompressionStats, compress
from llava.matmul_precision import ieee_fp32_matmul
from llava.model.model_config import ModelConfig, NewlinePolicy, resolve_newline
from llava.model.packing import PackedInputs, pack_inputs, split_rows

logger = logging.getLogger(__name__)


def build_projector(vision_size: int, hidden_size: int) -> nn.Sequential:
    """`mlp2x_gelu`: Linear(V, D), exact (erf) GELU, Linear(D, D); indices 0 and 2 match the on-disk names."""
    return nn.Sequential(nn.Linear(vision_size, hidden_size), nn.GELU(), nn.Linear(hidden_size, hidden_size))


def pool_frames(features: torch.Tensor, mode: str, stride: int = 2) -> torch.Tensor:
    """[F, P, D] -> [F, T, D] on the square patch grid, as LLaVA-NeXT's `get_2dPool`: bilinear to
    ceil(side/stride) (27x27: stride 2 -> 14x14 = 196, 3 -> 9x9, 4 -> 7x7), or average / max pooling with
    kernel = stride (floor: 13x13 = 169 at stride 2)."""
    n_frames, n_patches, dim = features.shape
    side = math.isqrt(n_patches)
    if side * side != n_patches:
        raise ValueError(f"{n_patches} patches per frame do not form a square grid")
    grid = features.view(n_frames, side, side, dim).permute(0, 3, 1, 2)  # (F, D, side, side)
    if mode == "bilinear":
        out = math.ceil(side / stride)
        grid = F.interpolate(grid, size=(out, out), mode="bilinear", align_corners=False)  # (F, D, t, t)
    elif mode == "average":
        grid = F.avg_pool2d(grid, stride)  # (F, D, t, t)
    elif mode == "max":
        grid = F.max_pool2d(grid, stride)  # (F, D, t, t)
    else:
        raise ValueError(f"mm_spatial_pool_mode must be bilinear/average/max, got {mode!r}")
    return grid.flatten(2).transpose(1, 2)  # (F, T, D)


class LlavaOnevisionVideoModel(nn.Module):
    """A LLaVA-OneVision checkpoint for video QA, drop-in for LLaVA-NeXT's `model(...)` / `model.generate(...)`.

    `compression` (a CompressionConfig; method "none" keeps every token) and `newline` ("auto" / "one_token" /
    "frame" / "none") are plain attributes: change them between calls to compare budgets on one loaded model.
    """

    def __init__(
        self,
        config: ModelConfig,
        compression: CompressionConfig | None = None,
        newline: NewlinePolicy = "auto",
        attn_implementation: str = "sdpa",
    ) -> None:
        super().__init__()
        self.config = config
        self.vision_tower = AutoModel.from_config(copy.deepcopy(config.vision), attn_implementation=attn_implementation)
        self.projector = build_projector(config.vision.hidden_size, config.text.hidden_size)
        newline_param = nn.Parameter(torch.zeros(config.text.hidden_size)) if config.has_image_newline else None
        self.register_parameter("image_newline", newline_param)  # absent for `flat` checkpoints
        self.language_model = AutoModelForCausalLM.from_config(
            copy.deepcopy(config.text), attn_implementation=attn_implementation
        )
        self.compression = compression if compression is not None else CompressionConfig(method="none")
        self.newline: NewlinePolicy = newline
        self.stop_token_ids: list[int] = []
        self.last_compression: list[CompressionStats] = []

    # ---- stages -------------------------------------------------------------------------------------------
    def encode_frames(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[F, 3, S, S] -> [F, P, D]: tower's last layer output before post_layernorm, then the projector."""
        param = self.vision_tower.embeddings.patch_embedding.weight
        pixels = pixel_values.to(device=param.device, dtype=param.dtype)
        hidden = self.vision_tower(pixel_values=pixels, output_hidden_states=True).hidden_states[-1]  # (F, P, V)
        return self.projector(hidden.to(self.projector[0].weight.device))  # (F, P, D)

    def add_newline(self, tokens: torch.Tensor, n_frames: int, compressing: bool) -> torch.Tensor:
        """[K, D] -> [K (+1 or +F), D] per the newline policy; the parameter follows the tokens' device."""
        position = resolve_newline(self.newline, self.config, compressing)
        if position == "none":
            return tokens
        newline = self.image_newline.to(device=tokens.device, dtype=tokens.dtype)  # (D,)
        if position == "one_token":
            return torch.cat([tokens, newline[None]])  # (K + 1, D)
        frames = tokens.view(n_frames, -1, tokens.shape[-1])  # (F, T, D)
        newlines = newline.expand(n_frames, 1, -1)  # (F, 1, D)
        return torch.cat([frames, newlines], dim=1).flatten(0, 1)  # (F * (T + 1), D)

    def pooled_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[F, 3, S, S] -> [F, T, D]: what the compressor sees (tower + projector + the checkpoint's pooling)."""
        return pool_frames(self.encode_frames(pixel_values), self.config.pool_mode, self.config.pool_stride)

    def video_tokens(self, pixel_values: list[torch.Tensor]) -> list[torch.Tensor]:
        """One [F_i, 3, S, S] per video -> one visual block [K_i, D] per video (tower runs once on all frames)."""
        counts = [pv.shape[0] for pv in pixel_values]
        pooled = self.pooled_features(torch.cat(list(pixel_values)))  # (sum F, T, D)
        compressing = self.compression.method != "none"
        blocks, self.last_compression = [], []
        for video in torch.split(pooled, counts):  # (F_i, T, D)
            with ieee_fp32_matmul():  # lmms-eval turns TF32 on at import; similarities must stay float32
                result = compress(video, self.compression)  # tokens (K_i, D); method none: (F_i*T, D)
            self.last_compression.append(result.stats)
            blocks.append(self.add_newline(result.tokens, video.shape[0], compressing))
        return blocks

    def prepare_inputs(
        self,
        input_ids: torch.Tensor | list[torch.Tensor],
        images: list[torch.Tensor] | torch.Tensor | None = None,
        modalities: list[str] | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> PackedInputs:
        """Prompt ids (with IMAGE_TOKEN_INDEX) + videos -> left-padded embeddings, mask and positions."""
        videos = _as_video_list(images, modalities)
        blocks = self.video_tokens(videos) if videos else []
        rows = split_rows(input_ids, attention_mask)
        return pack_inputs(rows, blocks, self.language_model.get_input_embeddings())

    # ---- LLaVA-NeXT drop-in entry points ------------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.Tensor | list[torch.Tensor],
        images: list[torch.Tensor] | torch.Tensor | None = None,
        modalities: list[str] | None = None,
        attention_mask: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> Any:
        """Logits for the packed prompt(s): an output with `.logits` [B, L', vocab] (L' counts visual tokens)."""
        if kwargs.get("labels") is not None:
            raise ValueError("labels are not supported: they follow input_ids, which the visual tokens lengthen "
                             "(lmms-eval's loglikelihood / multiple_choice tasks need them); use generate_until tasks")
        packed = self.prepare_inputs(input_ids, images, modalities, attention_mask)
        return self.language_model(
            inputs_embeds=packed.inputs_embeds,
            attention_mask=packed.attention_mask,
            position_ids=packed.position_ids,
            **kwargs,
        )

    @torch.no_grad()
    def generate(
        self,
        inputs: torch.Tensor | list[torch.Tensor] | None = None,
        images: list[torch.Tensor] | torch.Tensor | None = None,
        modalities: list[str] | None = None,
        attention_mask: torch.Tensor | None = None,
        **generate_kwargs: Any,
    ) -> torch.Tensor:
        """New token ids [B, N] (the prompt is not repeated, as LLaVA-NeXT's generate via inputs_embeds).

        Greedy / sampling / KV cache are transformers' generation on the Qwen2 LM; stops on `stop_token_ids`
        (`<|im_end|>` when loaded by the builder) unless `eos_token_id` is given.
        """
        input_ids = generate_kwargs.pop("input_ids", inputs)
        if input_ids is None:
            raise ValueError("generate needs input_ids (prompt ids with IMAGE_TOKEN_INDEX where <image> was)")
        generate_kwargs.pop("image_sizes", None)  # LLaVA-NeXT passes it; unused for video
        packed = self.prepare_inputs(input_ids, images, modalities, attention_mask)
        if self.stop_token_ids:
            generate_kwargs.setdefault("eos_token_id", self.stop_token_ids)
        generate_kwargs.setdefault("pad_token_id", _first(generate_kwargs.get("eos_token_id")))
        return self.language_model.generate(
            inputs_embeds=packed.inputs_embeds, attention_mask=packed.attention_mask, **generate_kwargs
        )

    def load_weights(self, state: dict[str, torch.Tensor], assign: bool = False) -> None:
        """Load tensors named as our `state_dict()`; any missing, unexpected or mis-shaped name -> ValueError."""
        expected = {k: v.shape for k, v in self.state_dict().items()}
        if self.config.tie_word_embeddings:
            expected.pop("language_model.lm_head.weight", None)
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        shapes = [f"{k}: {tuple(state[k].shape)} vs {tuple(s)}" for k, s in expected.items()
                  if k in state and state[k].shape != s]
        if missing or unexpected or shapes:
            raise ValueError(
                f"checkpoint weights do not fit the config: missing {missing}, unexpected {unexpected}, "
                f"shape mismatches (disk vs model) {shapes}; check that config.json belongs to these weights"
            )
        self.load_state_dict(state, strict=False, assign=assign)
        if self.config.tie_word_embeddings:
            lm = self.language_model
            lm.lm_head.weight = lm.get_input_embeddings().weight

    @property
    def device(self) -> torch.device:
        return self.language_model.get_input_embeddings().weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.language_model.get_input_embeddings().weight.dtype


def _as_video_list(images: list[torch.Tensor] | torch.Tensor | None, modalities: list[str] | None) -> list:
    """LLaVA-NeXT passes `images=[tensor(F,3,S,S)]` plus `modalities=["video"]` per sample; only video is served."""
    if images is None:
        return []
    videos = [images] if isinstance(images, torch.Tensor) else list(images)
    for video in videos:
        if not isinstance(video, torch.Tensor) or video.dim() != 4:
            shape = tuple(video.shape) if isinstance(video, torch.Tensor) else type(video).__name__
            raise TypeError(f"each video must be a tensor [F, 3, S, S] from image_processor.preprocess, got {shape}")
    modalities = modalities if modalities is not None else ["image"] * len(videos)  # LLaVA-NeXT's default
    if len(modalities) != len(videos) or any(m != "video" for m in modalities):
        raise ValueError(
            f"modalities must be ['video'] per video ({len(videos)} given), got {modalities!r} (no modalities means "
            "images, as in LLaVA-NeXT); this package runs LLaVA-OneVision's video path only: image inputs are not "
            "supported, pass video frames with modalities=['video']"
        )
    return videos


def _first(value: int | list[int] | None) -> int | None:
    return value[0] if isinstance(value, (list, tuple)) and value else value
