"""LLaVA-OneVision's video path on transformers parts, with LLaVA-Scissor compression between pooling and the LLM.

`video -> SigLIP tower (last layer before post_layernorm) -> projector -> bilinear pool -> compress -> newline ->
spliced at the <image> placeholder -> Qwen2`. A compression method that needs more than the pooled features
(`MethodSpec.needs`: the unpooled grid, or the tower's last layer's attention and keys) gets them from the same
tower pass, computed only when that method is in use. Follows LLaVA-NeXT's llava_arch.py video branch and transformers'
LlavaOnevision `get_video_features`; composed from SiglipVisionModel and Qwen2ForCausalLM, not inherited. Each
stage is its own method so every caller (generate, the CLI, evaluation, serving) composes the same ones and can
time or reuse any of them.

Shape legend: B batch, F frames, P patches per frame, T tokens per frame after pooling, K kept tokens,
D hidden size (LLM), V vision hidden size, H heads, Dk head size, L text length.
"""
from __future__ import annotations

import copy
import dataclasses
import logging
import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, AutoModelForCausalLM

from llava.compression import CompressionConfig, CompressionStats, compress
from llava.compression.types import METHOD_SPECS, NEED_FIELDS, VisualExtras
from llava.config_types import FRAME_BATCH_SIZE, Need, NewlinePolicy
from llava.model.dycoke_decode import dycoke_prefill, dycoke_step
from llava.model.fastv import FastVPrefill, fastv_prefill
from llava.model.llm_loop import decode_step, generate_tokens, generation_settings
from llava.model.model_config import ModelConfig, resolve_newline
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


def layer_attention(layer: nn.Module, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """What a SigLIP encoder layer's attention gives each token, from the layer's input hidden [F, P, V] and its
    own modules (layer_norm1 -> q_proj / k_proj): softmax(q k^T / sqrt(Dk)) per frame in float32, mean over
    heads then over query rows -> [F, P]; and the keys, mean over heads -> [F, P, Dk] (float32).

    Recomputed from the layer's input because sdpa / flash attention return no probabilities, and switching the
    tower to eager attention would cost every layer its [F, H, P, P] map; this costs one layer's q / k projections
    and one [f, H, P, P] float32 map per chunk of frames.
    """
    attn = layer.self_attn
    normed = layer.layer_norm1(hidden)  # (F, P, V)
    heads = (*normed.shape[:2], attn.num_heads, attn.head_dim)
    queries = attn.q_proj(normed).view(heads).transpose(1, 2).float()  # (F, H, P, Dk)
    keys = attn.k_proj(normed).view(heads).transpose(1, 2).float()  # (F, H, P, Dk)
    probs = (queries @ keys.transpose(-1, -2)).mul_(attn.scale)  # (F, H, P, P) logits; softmax in place below
    probs.sub_(probs.amax(dim=-1, keepdim=True)).exp_()
    probs.div_(probs.sum(dim=-1, keepdim=True))  # (F, H, P, P): one buffer, not three
    return probs.mean(dim=1).mean(dim=1), keys.mean(dim=1)  # (F, P), (F, P, Dk)


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
    `visual_inputs` (pixels [F, 3, S, S] -> [F, T, D] + the extras `visual_needs` names; `pooled_features` without
    extras) -> `compress_features` ([F, T, D] + extras -> EncodedVideo with [K, D] tokens and stats) ->
    `embed_prompts` (ids + visual blocks -> padded LLM inputs) -> `prefill` (one forward: logits + KV cache) /
    `generate_from_embeddings` (transformers' generation: prefill then decode).
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
        # DyCoke's decode stage: per row of the last generate call, the video tokens layers L and up attended to,
        # averaged over its decode steps [B] (None after any other method); what reports count per layer
        self.decode_video_tokens: torch.Tensor | None = None

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

    def encode_frames_with_attention(
        self, pixel_values: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`encode_frames` plus the last used tower layer's attention [F, P] and keys [F, P, Dk] (`layer_attention`).

        The encoder runs as in `encode_frames` (sdpa / flash, same output); a pre-hook on its last layer keeps
        that layer's input, from which the attention is recomputed after the pass.
        """
        last = self.vision_tower.encoder.layers[-1]
        inputs: list[torch.Tensor] = []
        handle = last.register_forward_pre_hook(
            lambda module, args, kwargs: inputs.append(args[0] if args else kwargs["hidden_states"]), with_kwargs=True)
        try:
            grid = self.encode_frames(pixel_values)  # (F, P, D)
        finally:
            handle.remove()
        attention, keys = layer_attention(last, inputs[0])  # (F, P), (F, P, Dk)
        return grid, attention, keys

    def visual_inputs(
        self, pixel_values: torch.Tensor, needs: Collection[Need] = (), frame_batch_size: int = FRAME_BATCH_SIZE
    ) -> tuple[torch.Tensor, VisualExtras]:
        """[F, 3, S, S] -> pooled features [F, T, D] (tower + projector + the checkpoint's pooling) and the
        extras `needs` names (`MethodSpec.needs`), from one tower pass: "grid" = the projector output before
        pooling [F, P, D]; "tower_attention" = the last layer's attention [F, T] and keys [F, T, Dk] (float32),
        pooled exactly as the features are. Fields not needed stay None and cost nothing.

        Frames go through the tower `frame_batch_size` at a time and are pooled at once, so peak memory is one
        chunk's activations plus the results, linear in F (long videos fit). The pooling mode and stride are read
        from `config` at every call (lmms-eval assigns them before each video).
        """
        if frame_batch_size < 1:
            raise ValueError(f"frame_batch_size must be >= 1, got {frame_batch_size}")
        unknown = sorted(set(needs) - set(NEED_FIELDS))
        if unknown:
            raise ValueError(f"unknown needs {unknown}; allowed: {sorted(NEED_FIELDS)}")
        chunks = [self._chunk_inputs(chunk, needs) for chunk in torch.split(pixel_values, frame_batch_size)]
        joined = {name: torch.cat([chunk[name] for chunk in chunks]) for name in chunks[0]}
        return joined.pop("pooled"), VisualExtras(**joined)  # (F, T, D)

    def _chunk_inputs(self, pixels: torch.Tensor, needs: Collection[Need]) -> dict[str, torch.Tensor]:
        mode, stride = self.config.pool_mode, self.config.pool_stride
        out: dict[str, torch.Tensor] = {}
        if "tower_attention" in needs:
            grid, attention, keys = self.encode_frames_with_attention(pixels)  # (f, P, D), (f, P), (f, P, Dk)
            out["attention"] = pool_frames(attention[..., None], mode, stride)[..., 0]  # (f, T)
            out["keys"] = pool_frames(keys, mode, stride)  # (f, T, Dk)
        else:
            grid = self.encode_frames(pixels)  # (f, P, D)
        if "grid" in needs:
            out["grid"] = grid
        out["pooled"] = pool_frames(grid, mode, stride)  # (f, T, D)
        return out

    def pooled_features(self, pixel_values: torch.Tensor, frame_batch_size: int = FRAME_BATCH_SIZE) -> torch.Tensor:
        """[F, 3, S, S] -> [F, T, D]: `visual_inputs` without extras, what the default compression sees."""
        return self.visual_inputs(pixel_values, (), frame_batch_size)[0]  # (F, T, D)

    def visual_needs(self, compression: CompressionConfig | None = None) -> tuple[Need, ...]:
        """The extras the compression in effect needs (`MethodSpec.needs`): what to ask `visual_inputs` for."""
        return METHOD_SPECS[self.compression_in_effect(compression).method].needs

    # ---- stage 2: pooled features -> compressed visual block -----------------------------------------------
    def compression_in_effect(self, compression: CompressionConfig | None) -> CompressionConfig:
        """The config a call compresses with: its own, else `default_compression` (the run config's section or
        the checkpoint's keys, resolved at load). Callers that key caches or reports on the compression read it
        here, so they name the config the stages actually use."""
        return compression if compression is not None else self.default_compression

    def compress_features(
        self, pooled: torch.Tensor, compression: CompressionConfig | None = None, timed: bool = False,
        extras: VisualExtras | None = None,
    ) -> EncodedVideo:
        """[F, T, D] (+ the extras the method needs, from `visual_inputs`) -> EncodedVideo: `compress` with this
        call's config (default: `default_compression`), then the newline policy. timed=True fills `stats.time_ms`
        (it synchronises the device; off by default so the call stays asynchronous on GPUs)."""
        compression = self.compression_in_effect(compression)
        result = compress(pooled, compression, timed=timed, extras=extras)  # tokens (K, D); method none: (F*T, D)
        compressing = compression.method != "none" and METHOD_SPECS[compression.method].stage == "pre_llm"
        block = self.add_newline(result.tokens, pooled.shape[0], compressing)  # (K [+n], D); in-LLM: as none
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
        """Pixels [F, 3, S, S] -> EncodedVideo, reusable for any number of questions (compress once); the tower
        computes the extras the method needs in the same pass."""
        compression = self.compression_in_effect(compression)
        pooled, extras = self.visual_inputs(pixel_values, self.visual_needs(compression), frame_batch_size)
        return self.compress_features(pooled, compression, extras=extras)

    def encode_videos(
        self, videos: Sequence[VideoInput], compression: CompressionConfig | None = None
    ) -> list[EncodedVideo]:
        """Pixel tensors [F_i, 3, S, S] and already encoded videos, in order -> one EncodedVideo each; the pixel
        tensors share tower batches (all their frames in one stream), encoded ones are passed through."""
        new = [v for v in videos if not isinstance(v, EncodedVideo)]
        if not new:
            return list(videos)
        compression = self.compression_in_effect(compression)
        pooled, extras = self.visual_inputs(torch.cat(new), self.visual_needs(compression))  # (sum F_i, T, D)
        sizes = [v.shape[0] for v in new]
        fresh = iter([self.compress_features(p, compression, extras=e)
                      for p, e in zip(torch.split(pooled, sizes), extras.split(sizes), strict=True)])
        return [v if isinstance(v, EncodedVideo) else next(fresh) for v in videos]

    # ---- stage 3: prompts + visual blocks -> LLM inputs -----------------------------------------------------
    def embed_prompts(
        self,
        input_ids: torch.Tensor | list[torch.Tensor],
        videos: Sequence[EncodedVideo] = (),
        attention_mask: torch.Tensor | None = None,
    ) -> PackedInputs:
        """Prompt ids (IMAGE_TOKEN_INDEX where each video goes, in order) + blocks -> left-padded embeddings
        [B, L', D], mask and positions (L' counts the visual tokens). When the videos' method prunes inside the
        LLM (`MethodSpec.stage`), the result also names it and marks the video tokens (newlines excluded)."""
        rows = split_rows(input_ids, attention_mask)
        packed = pack_inputs(rows, [video.tokens for video in videos], self.language_model.get_input_embeddings())
        in_llm = _in_llm_config(videos)
        if in_llm is None:
            return packed
        flags = torch.cat([_video_flags(video) for video in videos]).to(packed.visual_mask.device)  # (sum K,)
        video_mask = packed.visual_mask.masked_scatter(packed.visual_mask, flags)  # (B, L')
        return dataclasses.replace(packed, video_mask=video_mask, in_llm=in_llm)

    # ---- stage 4: prefill / decode -------------------------------------------------------------------------
    def prefill(self, packed: PackedInputs, **kwargs: Any) -> Any:
        """One forward pass over the packed prompt: `.logits` [B, L', vocab] (and `.past_key_values`). With an
        in-LLM method (FastV): `fastv.FastVPrefill`, whose `.logits` [B, M, vocab] cover the rows that reach the
        last layer (text and kept video tokens; the last row is still the next-token prediction)."""
        if packed.in_llm is not None and packed.in_llm.method == "fastv":  # DyCoke's prefill is the plain one
            if kwargs:
                raise ValueError(f"an in-LLM compression method's forward takes no keywords, got {sorted(kwargs)}")
            return self._fastv_prefill(packed, all_logits=True)
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
        self.decode_video_tokens = None
        if packed.in_llm is not None:
            return self._in_llm_generate(packed, generate_kwargs)
        return self.language_model.generate(
            inputs_embeds=packed.inputs_embeds, attention_mask=packed.attention_mask, **generate_kwargs
        )

    def _fastv_prefill(self, packed: PackedInputs, all_logits: bool) -> FastVPrefill:
        return fastv_prefill(self.language_model, packed.inputs_embeds, packed.attention_mask, packed.position_ids,
                             packed.video_mask, packed.in_llm, all_logits=all_logits)

    def _in_llm_generate(self, packed: PackedInputs, generate_kwargs: dict[str, Any]) -> torch.Tensor:
        """Our own prefill / decode loop (`llm_loop`): transformers' generation builds one mask for all layers,
        while FastV's upper layers cache fewer rows than its lower ones and DyCoke's decode steps give its upper
        layers their own key mask each step."""
        lm = self.language_model
        config, processors = generation_settings(lm, generate_kwargs)
        if packed.in_llm.method == "fastv":
            out = self._fastv_prefill(packed, all_logits=False)
            return generate_tokens(out.logits[:, -1], partial(decode_step, lm, out.state), config, processors,
                                   packed.inputs_embeds.shape[1])
        first, state, dycoke = dycoke_prefill(lm, packed.inputs_embeds, packed.attention_mask, packed.position_ids,
                                              packed.video_mask, packed.in_llm)
        ids = generate_tokens(first, partial(dycoke_step, lm, state, dycoke), config, processors,
                              packed.inputs_embeds.shape[1])
        self.decode_video_tokens = dycoke.mean_attended()
        return ids

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


def _in_llm_config(videos: Sequence[EncodedVideo]) -> CompressionConfig | None:
    """The in-LLM compression config of a batch's videos, or None when their methods act before the LLM; one
    LLM pass runs one in-LLM method, so a batch mixing it with other configs raises."""
    configs = {video.compression for video in videos}
    in_llm = [c for c in configs if c.prunes_in_llm]
    if not in_llm:
        return None
    if len(configs) > 1:
        raise ValueError(f"the videos of one batch must share an in-LLM compression config, got "
                         f"{sorted(map(str, configs))}")
    return in_llm[0]


def _video_flags(video: EncodedVideo) -> torch.Tensor:
    """[K + newline_tokens] bool: True on video tokens, False on the newline(s) (after all frames, or after
    each frame's T tokens)."""
    flags = torch.ones(video.tokens.shape[0], dtype=torch.bool)
    if video.newline_tokens:
        flags.view(video.newline_tokens, -1)[:, -1] = False  # one_token: (1, K + 1); frame: (F, T + 1)
    return flags


def _first(value: int | list[int] | None) -> int | None:
    return value[0] if isinstance(value, (list, tuple)) and value else value
