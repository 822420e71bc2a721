"""LLaVA-OneVision's video path on transformers parts, with LLaVA-Scissor compression between pooling and the LLM.

`video -> SigLIP tower (last layer before post_layernorm) -> projector -> bilinear pool -> compress -> newline ->
spliced at the <image> placeholder -> Qwen2`. Follows LLaVA-NeXT's llava_arch.py video branch and transformers'
LlavaOnevision `get_video_features`; composed from SiglipVisionModel and Qwen2ForCausalLM, not inherited. Each
stage is its own method so every caller (generate, the CLI, evaluation, serving) composes the same ones and can
time or reuse any of them.

Shape legend: B batch, F frames, P patches per frame, T tokens per frame after pooling, K kept tokens,
D hidden size (LLM), V vision hidden size, L text length.
"""
from __future__ import annotations

import copy
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, AutoModelForCausalLM

from llava.compression import CompressionConfig, CompressionStats, compress
from llava.model.model_config import FRAME_BATCH_SIZE, ModelConfig, NewlinePolicy, resolve_newline
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


@dataclass
class EncodedVideo:
    """One video encoded and compressed: the visual block that replaces a prompt's `<image>` placeholder.

    SCC never looks at the text, so one block answers any number of questions exactly: encode once, then pass it
    to `generate(..., videos=[video])` per question. tokens [K + newline_tokens, D] in the model's dtype and on
    its device; assignment [F, T] says which kept token each pooled patch was merged into.
    """

    tokens: torch.Tensor
    assignment: torch.Tensor
    stats: CompressionStats
    compression: CompressionConfig
    newline_tokens: int

    @property
    def num_frames(self) -> int:
        return self.assignment.shape[0]

    @property
    def tokens_per_frame(self) -> int:
        return self.assignment.shape[1]


VideoInput = torch.Tensor | EncodedVideo


class LlavaOnevisionVideoModel(nn.Module):
    """A LLaVA-OneVision checkpoint for video QA, drop-in for LLaVA-NeXT's `model(...)` / `model.generate(...)`.

    The stages are public verbs with shape contracts, and every caller composes the same ones:
    `pooled_features` (pixels [F, 3, S, S] -> [F, T, D]) -> `compress_features` ([F, T, D] -> EncodedVideo with
    [K, D] tokens and stats) -> `embed_prompts` (ids + visual blocks -> padded LLM inputs) -> `prefill` (one
    forward: logits + KV cache) / `generate_from_embeddings` (transformers' generation: prefill then decode).
    Compression is an argument of each call (`compression=`); `default_compression` (set at load from the run
    config or the checkpoint's keys) is used when it is left out, so one loaded model serves callers with
    different budgets at once. `newline` is the load-time layout policy ("auto" / "one_token" / "frame" / "none").
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
        self.default_compression = compression if compression is not None else CompressionConfig(method="none")
        self.newline: NewlinePolicy = newline
        self.stop_token_ids: list[int] = []  # <|im_end|> and the LM's eos, set by the loader from the tokenizer

    # ---- stage 1: pixels -> pooled features ------------------------------------------------------------------
    def encode_frames(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[F, 3, S, S] -> [F, P, D]: the tower's last layer before post_layernorm, then the projector.

        The encoder is called directly (embeddings -> encoder) because its `last_hidden_state` is exactly that
        layer; asking the full model for `hidden_states` would keep every layer's activations alive.
        """
        tower = self.vision_tower
        param = tower.embeddings.patch_embedding.weight
        pixels = pixel_values.to(device=param.device, dtype=param.dtype)
        hidden = tower.encoder(inputs_embeds=tower.embeddings(pixels)).last_hidden_state  # (F, P, V)
        return self.projector(hidden.to(self.projector[0].weight.device))  # (F, P, D)

    def pooled_features(self, pixel_values: torch.Tensor, frame_batch_size: int = FRAME_BATCH_SIZE) -> torch.Tensor:
        """[F, 3, S, S] -> [F, T, D]: what the compressor sees (tower + projector + the checkpoint's pooling).

        Frames go through the tower `frame_batch_size` at a time and are pooled at once, so peak memory is one
        chunk's activations plus the pooled [F, T, D] result, linear in F (long videos fit). The pooling mode and
        stride are read from `config` at every call (lmms-eval assigns them before each video).
        """
        if frame_batch_size < 1:
            raise ValueError(f"frame_batch_size must be >= 1, got {frame_batch_size}")
        mode, stride = self.config.pool_mode, self.config.pool_stride
        chunks = [pool_frames(self.encode_frames(chunk), mode, stride)  # (f, T, D)
                  for chunk in torch.split(pixel_values, frame_batch_size)]
        return torch.cat(chunks)  # (F, T, D)

    # ---- stage 2: pooled features -> compressed visual block -----------------------------------------------
    def compress_features(
        self, pooled: torch.Tensor, compression: CompressionConfig | None = None, timed: bool = False
    ) -> EncodedVideo:
        """[F, T, D] -> EncodedVideo: `compress` with this call's config (default: `default_compression`), then
        the newline policy. timed=True fills `stats.time_ms` (it synchronises the device; off by default so the
        call stays asynchronous on GPUs)."""
        compression = compression if compression is not None else self.default_compression
        result = compress(pooled, compression, timed=timed)  # tokens (K, D); method none: (F*T, D)
        block = self.add_newline(result.tokens, pooled.shape[0], compression.method != "none")  # (K [+n], D)
        newlines = block.shape[0] - result.tokens.shape[0]
        return EncodedVideo(block, result.assignment, result.stats, compression, newlines)

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

    def encode_video(
        self, pixel_values: torch.Tensor, compression: CompressionConfig | None = None,
        frame_batch_size: int = FRAME_BATCH_SIZE,
    ) -> EncodedVideo:
        """Pixels [F, 3, S, S] -> EncodedVideo, reusable for any number of questions (compress once)."""
        return self.compress_features(self.pooled_features(pixel_values, frame_batch_size), compression)

    def encode_videos(
        self, videos: Sequence[VideoInput], compression: CompressionConfig | None = None
    ) -> list[EncodedVideo]:
        """Pixel tensors [F_i, 3, S, S] and already encoded videos, in order -> one EncodedVideo each; the pixel
        tensors share tower batches (all their frames in one stream), encoded ones are passed through."""
        new = [v for v in videos if not isinstance(v, EncodedVideo)]
        if not new:
            return list(videos)
        pooled = self.pooled_features(torch.cat(new))  # (sum F_i, T, D)
        fresh = iter([self.compress_features(p, compression) for p in torch.split(pooled, [v.shape[0] for v in new])])
        return [v if isinstance(v, EncodedVideo) else next(fresh) for v in videos]

    # ---- stage 3: prompts + visual blocks -> LLM inputs -----------------------------------------------------
    def embed_prompts(
        self,
        input_ids: torch.Tensor | list[torch.Tensor],
        videos: Sequence[EncodedVideo] = (),
        attention_mask: torch.Tensor | None = None,
    ) -> PackedInputs:
        """Prompt ids (IMAGE_TOKEN_INDEX where each video goes, in order) + blocks -> left-padded embeddings
        [B, L', D], mask and positions (L' counts the visual tokens)."""
        rows = split_rows(input_ids, attention_mask)
        return pack_inputs(rows, [video.tokens for video in videos], self.language_model.get_input_embeddings())

    # ---- stage 4: prefill / decode -------------------------------------------------------------------------
    def prefill(self, packed: PackedInputs, **kwargs: Any) -> Any:
        """One forward pass over the packed prompt: `.logits` [B, L', vocab] (and `.past_key_values`)."""
        return self.language_model(
            inputs_embeds=packed.inputs_embeds,
            attention_mask=packed.attention_mask,
            position_ids=packed.position_ids,
            **kwargs,
        )

    def generate_from_embeddings(self, packed: PackedInputs, **generate_kwargs: Any) -> torch.Tensor:
        """New token ids [B, N]: transformers' generation (prefill, then KV-cached decode; greedy or sampling;
        the checkpoint's generation config) from the packed prompt, stopping on `stop_token_ids` unless the
        caller gives `eos_token_id`."""
        if self.stop_token_ids:
            generate_kwargs.setdefault("eos_token_id", self.stop_token_ids)
        generate_kwargs.setdefault("pad_token_id", _first(generate_kwargs.get("eos_token_id")))
        return self.language_model.generate(
            inputs_embeds=packed.inputs_embeds, attention_mask=packed.attention_mask, **generate_kwargs
        )

    # ---- LLaVA-NeXT drop-in entry points (compositions of the stages) ---------------------------------------
    def prepare_inputs(
        self,
        input_ids: torch.Tensor | list[torch.Tensor],
        images: list[torch.Tensor] | torch.Tensor | None = None,
        modalities: list[str] | None = None,
        attention_mask: torch.Tensor | None = None,
        videos: Sequence[VideoInput] | None = None,
        compression: CompressionConfig | None = None,
    ) -> PackedInputs:
        """Prompt ids + videos (LLaVA-NeXT's `images=` pixel tensors, or `videos=` mixing EncodedVideo and
        pixel tensors) -> packed LLM inputs."""
        if images is not None and videos is not None:
            raise ValueError("pass the videos as images=[pixels] (LLaVA-NeXT style) or as videos=[...], not both")
        items = _as_video_list(images, modalities) if videos is None else _check_videos(videos)
        return self.embed_prompts(input_ids, self.encode_videos(items, compression), attention_mask)

    def forward(
        self,
        input_ids: torch.Tensor | list[torch.Tensor],
        images: list[torch.Tensor] | torch.Tensor | None = None,
        modalities: list[str] | None = None,
        attention_mask: torch.Tensor | None = None,
        videos: Sequence[VideoInput] | None = None,
        compression: CompressionConfig | None = None,
        **kwargs: Any,
    ) -> Any:
        """Logits for the packed prompt(s): an output with `.logits` [B, L', vocab] (L' counts visual tokens)."""
        if kwargs.get("labels") is not None:
            raise ValueError("labels are not supported: they follow input_ids, which the visual tokens lengthen "
                             "(lmms-eval's loglikelihood / multiple_choice tasks need them); use generate_until tasks")
        packed = self.prepare_inputs(input_ids, images, modalities, attention_mask, videos, compression)
        return self.prefill(packed, **kwargs)

    @torch.no_grad()
    def generate(
        self,
        inputs: torch.Tensor | list[torch.Tensor] | None = None,
        images: list[torch.Tensor] | torch.Tensor | None = None,
        modalities: list[str] | None = None,
        attention_mask: torch.Tensor | None = None,
        videos: Sequence[VideoInput] | None = None,
        compression: CompressionConfig | None = None,
        **generate_kwargs: Any,
    ) -> torch.Tensor:
        """New token ids [B, N] (the prompt is not repeated, as LLaVA-NeXT's generate via inputs_embeds).

        videos: EncodedVideo (compress once, ask many times) and / or pixel tensors, one per `<image>`, in order;
        or LLaVA-NeXT's `images=[pixels]` + `modalities=["video"]`. compression: this call's config for the
        pixel tensors (default `default_compression`). Greedy / sampling / KV cache are transformers' generation.
        """
        input_ids = generate_kwargs.pop("input_ids", inputs)
        if input_ids is None:
            raise ValueError("generate needs input_ids (prompt ids with IMAGE_TOKEN_INDEX where <image> was)")
        generate_kwargs.pop("image_sizes", None)  # LLaVA-NeXT passes it; unused for video
        packed = self.prepare_inputs(input_ids, images, modalities, attention_mask, videos, compression)
        return self.generate_from_embeddings(packed, **generate_kwargs)

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


def _check_videos(videos: Sequence[VideoInput]) -> list[VideoInput]:
    for video in videos:
        if not isinstance(video, EncodedVideo) and not (isinstance(video, torch.Tensor) and video.dim() == 4):
            kind = tuple(video.shape) if isinstance(video, torch.Tensor) else type(video).__name__
            raise TypeError(f"videos=[...] takes EncodedVideo (model.encode_video) or pixels [F, 3, S, S], got {kind}")
    return list(videos)


def _first(value: int | list[int] | None) -> int | None:
    return value[0] if isinstance(value, (list, tuple)) and value else value
