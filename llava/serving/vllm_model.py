"""LLaVA-OneVision with video token compression inside vLLM: subclasses of vLLM's own classes, three overrides.

- Count: the processor writes K = max(1, round(r * F * T)) video placeholders (`llava.serving.budget`), F frames
  after vLLM's video loading, T = vLLM's pooled tokens per frame (196 at 384 px).
- Method and ratio: `mm_processor_kwargs` "method" (a servable one, default "scc") and "retention_ratio" (engine
  default, or vLLM's `--video-pruning-rate q` / `--video-pruning-method` as r = 1 - q, overridden per request)
  travel with each video as two batched "video" fields kept on the CPU, so the model reads them without a device
  sync. Request kwargs are part of vLLM's multimodal hash, so the processor, encoder and prefix caches keep
  budgets apart.
- Embeddings: tower, projector and pooling run on all frames of the batch at once (vLLM's own
  `_video_pixels_to_features`), then `llava.compression.compress` per video returns exactly K rows.

vLLM 0.32 applies its pruning flags only in models that implement its pruning themselves; stock LLaVA-OneVision
accepts them and serves every token. Here the processing info turns them into the engine default above.

Images and precomputed video embeddings keep the stock path. Written against vLLM 0.32 / 0.33, whose private
methods it overrides (`_get_prompt_updates`, `_postprocess_hf_mm_data`, `_get_mm_fields_config`,
`_parse_and_validate_video_input`, `_process_video_pixels`); the `serve` extra pins that range.

Importing this module imports vLLM: the plugin registers it by name, so vLLM imports it only when it builds the model.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated

import torch
from transformers import BatchFeature, LlavaOnevisionProcessor
from vllm.config import MultiModalConfig, VllmConfig
from vllm.model_executor.models.llava_onevision import (
    LlavaOnevisionDummyInputsBuilder,
    LlavaOnevisionForConditionalGeneration,
    LlavaOnevisionMultiModalProcessor,
    LlavaOnevisionProcessingInfo,
    LlavaOnevisionVideoPixelInputs,
)
from vllm.multimodal import MULTIMODAL_REGISTRY
from vllm.multimodal.inputs import MultiModalFieldConfig, MultiModalKwargsItems
from vllm.multimodal.parse import MultiModalDataItems, VideoProcessorItems
from vllm.multimodal.processing import PromptReplacement, PromptUpdate
from vllm.utils.gpu_sync_debug import gpu_sync_allowed
from vllm.utils.tensor_schema import TensorShape

from llava.compression import METHODS, compress
from llava.run_config import VideoSection
from llava.serving.budget import (
    PRUNING_METHODS,
    VideoBudget,
    pruning_defaults,
    requested_budget,
    without_serving_keys,
)

RATIO_FIELD = "video_retention_ratio"  # per-video model input carrying the ratio (float64, on the CPU)
METHOD_FIELD = "video_compression_method"  # per-video model input: the method's index in METHODS (int64, CPU)
# the run config's frame default (32, as vLLM's video loader, the paper and lmms-eval sample)
DEFAULT_MAX_FRAMES = VideoSection.frames


def engine_defaults(mm_config: MultiModalConfig) -> dict[str, object]:
    """vLLM's pruning flags as our engine-default keys ({} when off), checked together with `--mm-processor-kwargs`:
    both at once, or a bad default, raise."""
    configured = mm_config.mm_processor_kwargs or {}
    defaults = pruning_defaults(mm_config.get_video_pruning_spec(), configured)
    requested_budget({**configured, **defaults})
    return defaults


class ScissorProcessingInfo(LlavaOnevisionProcessingInfo):
    """Stock processing info, plus the budget in effect and an encoder budget for the configured frame count."""

    def video_budget(self, request_kwargs: Mapping[str, object]) -> VideoBudget:
        """The request's mm_processor_kwargs over the engine default (`--mm-processor-kwargs`, or vLLM's pruning
        flags as method m at r = 1 - q), key by key, validated; the stock layout when no ratio is set."""
        defaults = engine_defaults(self.ctx.get_mm_config())
        return requested_budget({**defaults, **self.ctx.get_merged_mm_kwargs(request_kwargs)})

    def get_hf_processor(self, **kwargs: object) -> LlavaOnevisionProcessor:
        return super().get_hf_processor(**without_serving_keys(kwargs))

    def max_frames(self) -> int:
        """`--limit-mm-per-prompt '{"video": {"count": N, "num_frames": F}}'` if set, else the run config's
        default frame count (32).

        Stock vLLM sizes its encoder cache for at most 16 frames and then rejects 32-frame videos at r = 1.0.
        """
        options = self.ctx.get_mm_config().limit_per_prompt.get("video")
        frames = getattr(options, "num_frames", None)
        return frames if frames else DEFAULT_MAX_FRAMES

    def get_num_frames_with_most_features(self, seq_len: int, mm_counts: Mapping[str, int]) -> int:
        """Dummy (profiling) videos get the configured frame count, so GPU memory profiling sees SCC's real peak;
        still no more frames than fit into `seq_len` uncompressed, as stock."""
        fitting = self._get_max_video_frames(seq_len) // max(mm_counts.get("video", 0), 1)
        return max(min(fitting, self.max_frames()), 1)

    def get_mm_max_tokens_per_item(self, seq_len: int, mm_counts: Mapping[str, int]) -> Mapping[str, int]:
        """Video: the uncompressed count of the configured frames, F * T + 1, capped at `seq_len`; it bounds any
        per-request ratio. Images: stock."""
        frame_tokens = self._get_num_frame_tokens(image_width=0, image_height=0)  # from the config alone
        video = min(seq_len, VideoBudget().token_count(self.max_frames(), frame_tokens))
        return {"image": self.get_max_image_tokens(), "video": video}


class ScissorMultiModalProcessor(LlavaOnevisionMultiModalProcessor):
    """Stock processor; videos get method and ratio fields and K placeholders."""

    def _postprocess_hf_mm_data(
        self,
        mm_inputs: Mapping[str, object],
        hf_processor_mm_kwargs: Mapping[str, object],
        processed_data: BatchFeature,
    ) -> BatchFeature:
        processed_data = super()._postprocess_hf_mm_data(mm_inputs, hf_processor_mm_kwargs, processed_data)
        videos = processed_data.get("pixel_values_videos")
        if videos is not None:
            budget = self.info.video_budget(hf_processor_mm_kwargs)
            processed_data[RATIO_FIELD] = torch.full((len(videos),), budget.ratio, dtype=torch.float64)  # (videos,)
            method = METHODS.index(budget.method)
            processed_data[METHOD_FIELD] = torch.full((len(videos),), method, dtype=torch.int64)  # (videos,)
        return processed_data

    def _get_mm_fields_config(
        self, hf_inputs: BatchFeature, hf_processor_mm_kwargs: Mapping[str, object]
    ) -> Mapping[str, MultiModalFieldConfig]:
        fields = dict(super()._get_mm_fields_config(hf_inputs, hf_processor_mm_kwargs))
        fields[RATIO_FIELD] = MultiModalFieldConfig.batched("video", keep_on_cpu=True)
        fields[METHOD_FIELD] = MultiModalFieldConfig.batched("video", keep_on_cpu=True)
        return fields

    def _get_prompt_updates(
        self,
        mm_items: MultiModalDataItems,
        hf_processor_mm_kwargs: Mapping[str, object],
        out_mm_kwargs: MultiModalKwargsItems,
    ) -> Sequence[PromptUpdate]:
        """Stock updates, except that a decoded video's replacement holds K tokens (read from the same fields the
        model will read); precomputed video embeddings keep their own length."""
        updates = list(super()._get_prompt_updates(mm_items, hf_processor_mm_kwargs, out_mm_kwargs))
        videos = mm_items.get("video")
        if not isinstance(videos, VideoProcessorItems):
            return updates
        video_token_id = self.info.get_hf_config().video_token_index
        frame_tokens = self.info._get_num_frame_tokens(image_width=0, image_height=0)

        def replacement(item_idx: int) -> list[int]:
            item = out_mm_kwargs["video"][item_idx]
            budget = budget_of(item[METHOD_FIELD].data, item[RATIO_FIELD].data)
            return [video_token_id] * budget.token_count(videos.get_num_frames(item_idx), frame_tokens)

        stock = [u for u in updates if u.modality != "video"]
        return [*stock, PromptReplacement(modality="video", target=[video_token_id], replacement=replacement)]


def budget_of(method: torch.Tensor | int, ratio: torch.Tensor | float) -> VideoBudget:
    """One video's budget from its two CPU fields (method index into METHODS, ratio)."""
    return VideoBudget(METHODS[int(method)], float(ratio))


class ScissorVideoPixelInputs(LlavaOnevisionVideoPixelInputs):
    """Stock video pixels plus one method index and one retention ratio per video (bn: number of videos)."""

    compression_method: Annotated[torch.Tensor, TensorShape("bn")]
    retention_ratio: Annotated[torch.Tensor, TensorShape("bn")]


@MULTIMODAL_REGISTRY.register_processor(
    ScissorMultiModalProcessor, info=ScissorProcessingInfo, dummy_inputs=LlavaOnevisionDummyInputsBuilder
)
class LlavaScissorOnevisionForConditionalGeneration(LlavaOnevisionForConditionalGeneration):
    """vLLM's LLaVA-OneVision whose video embeddings are compressed to each video's exact budget.

    Same weights, tower, projector and language model as stock; only the video embedding path differs. It declares
    the methods of vLLM's `--video-pruning-method` so that vLLM's config check applies to this architecture; it is
    no `SupportsMultiModalPruning` model (1-D RoPE: no positions to recompute, the runner's batching stays stock).
    """

    supported_video_pruning_methods = PRUNING_METHODS

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = "") -> None:
        """Stock model; a bad engine default (e.g. the pruning flags and `--mm-processor-kwargs` both setting the
        compression) fails here, at engine start. Not in the processing info's constructor: vLLM builds that one
        while checking for multimodal support and, on a ValueError, quietly serves the model as text-only."""
        engine_defaults(vllm_config.model_config.get_multimodal_config())
        super().__init__(vllm_config=vllm_config, prefix=prefix)

    def _parse_and_validate_video_input(self, **kwargs: object) -> ScissorVideoPixelInputs | None:
        pixel_values_videos = kwargs.get("pixel_values_videos")
        if pixel_values_videos is None:
            return None
        ratios, methods = kwargs.get(RATIO_FIELD), kwargs.get(METHOD_FIELD)
        if ratios is None or methods is None:
            raise ValueError(
                f"video input without {RATIO_FIELD!r} and {METHOD_FIELD!r}: videos must come through the "
                "LLaVA-Scissor processor, which vLLM attaches to this model class"
            )
        size = self.config.vision_config.image_size
        return ScissorVideoPixelInputs(
            type="pixel_values_videos",
            pixel_values_videos=pixel_values_videos,
            compression_method=methods,
            retention_ratio=ratios,
            resolve_bindings={"h": size, "w": size},
        )

    def _process_video_pixels(self, inputs: ScissorVideoPixelInputs) -> list[torch.Tensor]:
        """One [K_i, D] block per video: the tower runs once on every frame of the batch, then compression per
        video."""
        videos = list(inputs["pixel_values_videos"])  # each (F_i, 3, S, S)
        counts = [video.shape[0] for video in videos]
        pooled = self._video_pixels_to_features(self.vision_tower, torch.cat(videos))  # (sum F_i, T, D)
        budgets = [budget_of(method, ratio)  # CPU fields: no device sync
                   for method, ratio in zip(inputs["compression_method"], inputs["retention_ratio"], strict=True)]
        with gpu_sync_allowed():  # SCC has data-dependent shapes and host syncs, as vLLM's own EVS pruning
            return [self._video_block(features, budget)
                    for features, budget in zip(torch.split(pooled, counts), budgets, strict=True)]

    def _video_block(self, features: torch.Tensor, budget: VideoBudget) -> torch.Tensor:
        """[F, T, D] -> [K, D] compressed, or the stock [F * T + 1, D] (tokens + image_newline) at r = 1.0."""
        config = budget.compression()
        if config is None:
            newline = self.image_newline.to(features.dtype)[None]  # (1, D)
            return torch.cat([features.flatten(0, 1), newline])  # (F * T + 1, D)
        return compress(features, config).tokens  # (K, D)
