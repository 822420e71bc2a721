"""`llava_scissor`: an lmms-eval model (simple, `generate_until`) exposing this package's whole video stack.

    python -m lmms_eval --model llava_scissor \
        --model_args pretrained=CKPT,retention_ratio=0.1,max_frames_num=32 --tasks mvbench --batch_size 4

Differences from lmms-eval's stock `llava_onevision` class, on purpose:
- compression per run: `retention_ratio` (exact budget) or `tau` (paper mode), `method`, `epsilon`,
  `pool_shape=16x8x8` (PLLaVA's shape, `x`-separated because model_args are split at commas), `dycoke_k`
  (with `dycoke_p` / `dycoke_l` for DyCoke's decode stage), or
  `config=` one of our run configs (model_args override its fields);
- real batched generation (left-padded; the stock class asserts batch size 1);
- compress once: requests on the same video with the same frame / compression settings share one compressed
  block (`BlockCache`), and the questions of one video are scheduled next to each other;
- a video that fails to decode fails its sample with the file named (the stock class answers from the text);
- a per-sample log (`log_dir=`): tokens in / out, thresholds, vision / compression / prefill / decode ms, video
  tokens per LLM layer (`llm_layers`, `prune_layer`, `video_tokens_llm_input`, `video_tokens_after_prune`,
  `video_tokens_layer_mean`, as `llava.model.fastv.llm_token_counts` gives them) and the answer, which also lets a
  killed run resume without recomputing answered samples.
Frames are sampled as the stock class samples them (`linspace(0, total - 1, max_frames_num)`), decoded by
`llava.video`. The prompt is the stock one: `<image>\\n` + the task's text in the `conv_template` chat format.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
from accelerate import Accelerator
from lmms_eval import utils
from lmms_eval.api.instance import Instance
from lmms_eval.api.model import lmms

from llava.compression.timing import timed_call
from llava.compression.types import VisualExtras
from llava.config_types import KNOB_FIELDS
from llava.conversation import conv_templates, video_prompt_ids
from llava.eval.block_cache import BlockCache, EncodedBlock
from llava.eval.features import FrameSettings, file_key, video_pixels
from llava.eval.sample_log import SampleLog, request_key
from llava.model.fastv import llm_token_counts
from llava.run_config import RunConfig, load_config, resolve_config_path
from llava.runtime import answer_text, load_for_run, timed_generate

logger = logging.getLogger(__name__)

# model_args -> run config fields (dotted, as `llava.run_config.load_config` takes overrides)
RUN_CONFIG_ARGS = {
    "pretrained": "model.path", "dtype": "model.dtype", "device": "model.device",
    "attn_implementation": "model.attn_implementation", "newline": "model.newline",
    "max_frames_num": "video.frames", "video_backend": "video.backend",
    "retention_ratio": "compression.retention_ratio", "tau": "compression.tau",
    "seed": "compression.seed", "method": "compression.method",
    "precision": "compression.precision", "frame_batch_size": "model.frame_batch_size",
    **{knob: f"compression.{knob}" for knob in KNOB_FIELDS},  # every method's knobs, as the registry names them
}
DEFAULT_MAX_NEW_TOKENS = 1024  # lmms-eval's OneVision default when a task sets none
SAMPLING_KEYS = ("temperature", "top_p", "top_k")


@dataclass(frozen=True)
class EvalOptions:
    """What only the lmms-eval model needs beyond a run config."""

    conv_template: str = "qwen_2"
    batch_size: int = 1
    cache_size: int = 64  # compressed blocks kept (0 = no reuse)
    log_dir: str | None = None  # per-sample JSONL (and resume) directory


def run_config_from_args(config: str | None, args: dict[str, Any]) -> RunConfig:
    """`config=` (a YAML path or a name under configs/) plus model_args overrides -> a validated RunConfig.
    `method` is applied after `tau` / `retention_ratio`, which alone imply SCC. `pool_shape` (PLLaVA's budget)
    is written `T'xH'xW'` (`pool_shape=16x8x8`: lmms-eval splits model_args at commas); like `dycoke_k` (DyCoke's
    budget) it replaces the config's other budget keys (`load_config`)."""
    unknown = sorted(set(args) - set(RUN_CONFIG_ARGS))
    if unknown:
        raise TypeError(f"llava_scissor: unknown model_args {unknown}; allowed: "
                        f"{sorted([*RUN_CONFIG_ARGS, 'config', *EvalOptions.__dataclass_fields__])}")
    ordered = sorted(args.items(), key=lambda item: item[0] == "method")
    overrides = {RUN_CONFIG_ARGS[k]: parse_pool_shape(v) if k == "pool_shape" else v for k, v in ordered
                 if v is not None}
    return load_config(resolve_config_path(config) if config else None, overrides)


def parse_pool_shape(value: object) -> list[int]:
    """`16x8x8` (model_args) -> [16, 8, 8]; anything else raises naming the expected form."""
    parts = str(value).lower().split("x")
    if len(parts) != 3 or not all(part.strip().isdigit() for part in parts):
        raise ValueError(f"model_args pool_shape must look like 16x8x8 (frames x rows x columns), got {value!r}")
    return [int(part) for part in parts]


class LlavaScissor(lmms):
    """LLaVA-OneVision + LLaVA-Scissor for lmms-eval video tasks (see the module docstring)."""

    is_simple = True

    def __init__(self, config: str | None = None, conv_template: str = EvalOptions.conv_template,
                 batch_size: int | str = EvalOptions.batch_size, cache_size: int = EvalOptions.cache_size,
                 log_dir: str | None = EvalOptions.log_dir, max_batch_size: int | None = None,
                 **model_args: Any) -> None:
        super().__init__()
        if conv_template not in conv_templates:
            raise ValueError(f"conv_template must be one of {sorted(conv_templates)}, got {conv_template!r}")
        self.options = EvalOptions(conv_template, int(batch_size), int(cache_size), log_dir)
        if self.options.batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        self.accelerator = Accelerator()
        self._rank, self._world_size = _rank_and_world(self.accelerator)
        run = run_config_from_args(config, model_args)
        if self._world_size > 1:  # data parallel: one full model per process, on this process's device
            run = replace(run, model=replace(run.model, device=_process_device(self.accelerator)))
        self.run_config = run
        loaded = load_for_run(run)
        self.tokenizer, self.model, self.processor = loaded.tokenizer, loaded.model, loaded.processor
        self.frames = FrameSettings(run.video.frames, run.video.backend)
        self.cache = BlockCache(self.options.cache_size)
        self.compression = self.model.compression_in_effect(run.compression)
        self.settings = json.dumps([str(loaded.checkpoint_dir), asdict(self.frames), repr(self.compression),
                                    self.model.newline, str(self.model.dtype), conv_template])
        self.log = SampleLog(log_dir, self._rank)
        logger.info("llava_scissor: %s, compression %s, %d frames, batch %d, rank %d/%d", loaded.checkpoint_dir,
                    self.compression, self.frames.num_frames, self.options.batch_size, self._rank,
                    self._world_size)

    @property
    def batch_size(self) -> int:
        return self.options.batch_size

    @property
    def device(self) -> torch.device:
        return self.model.device

    # ---- compress once ------------------------------------------------------------------------------------
    def encoded_video(self, path: str) -> tuple[EncodedBlock, bool]:
        """The compressed visual block of one video file, from the cache when the same file was encoded with
        the same frame and compression settings; (block, hit)."""
        key = (file_key(path), self.frames, self.compression, self.model.newline)
        return self.cache.get_or_make(key, lambda: self._encode(path))

    @torch.no_grad()
    def _encode(self, path: str) -> EncodedBlock:
        def vision() -> tuple[torch.Tensor, VisualExtras]:  # decode + preprocess + tower + projector + pool
            pixels = video_pixels(path, self.processor, self.frames)  # (F, 3, S, S)
            needs = self.model.visual_needs(self.compression)
            return self.model.visual_inputs(pixels, needs, self.run_config.model.frame_batch_size)  # (F, T, D)

        (pooled, extras), vision_ms = timed_call(self.device, vision)
        video = self.model.compress_features(pooled, self.compression, timed=True, extras=extras)
        return EncodedBlock(video, vision_ms)

    # ---- lmms-eval API ------------------------------------------------------------------------------------
    def generate_until(self, requests: list[Instance]) -> list[str]:
        """Answers in request order; batches of `batch_size`, questions on the same video adjacent."""
        collator = utils.Collator([r.args for r in requests], self._order_key, grouping=True)
        answers: list[str] = []
        for chunk in collator.get_batched(n=self.options.batch_size, batch_fn=None):
            answers.extend(self._answer_batch(list(chunk)))
        logger.info("llava_scissor rank %d: %d videos encoded, %d reused (saved %.0f ms of vision + compression)%s",
                    self._rank, self.cache.counters.misses, self.cache.counters.hits, self.cache.counters.saved_ms,
                    "; the method prunes inside the LLM per question, so a reused block holds the vision stage only"
                    if self.compression.prunes_in_llm else "")
        return collator.get_original(answers)

    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        raise NotImplementedError("llava_scissor serves generate_until (video QA) tasks only; for loglikelihood "
                                  "tasks (e.g. *_mcppl) use lmms-eval's --model llava_onevision")

    def generate_until_multi_round(self, requests: list[Instance]) -> list[str]:
        raise NotImplementedError("llava_scissor does not serve multi-round tasks; use lmms-eval's "
                                  "--model llava_onevision for them")

    # ---- helpers ------------------------------------------------------------------------------------------
    def _video_of(self, args: tuple) -> str:
        context, _, doc_to_visual, doc_id, task, split = args
        visuals = doc_to_visual(self.task_dict[task][split][doc_id])
        if not isinstance(visuals, list) or len(visuals) != 1 or not isinstance(visuals[0], str):
            raise ValueError(f"llava_scissor serves one video file per sample; {task} doc {doc_id} gives "
                             f"{visuals!r:.200}")
        return visuals[0]

    def _order_key(self, args: tuple) -> tuple:
        return self._video_of(args), -len(args[0])

    def _answer_batch(self, chunk: list[tuple]) -> list[str]:
        keys = [request_key(self.settings, a[4], a[3], a[0], a[1]) for a in chunk]
        todo = [i for i, k in enumerate(keys) if k not in self.log.answers]
        if todo:
            new = self._generate([chunk[i] for i in todo])
            for i, (answer, record) in zip(todo, new, strict=True):
                self.log.answers[keys[i]] = answer
                self.log.write({"request_key": keys[i], **record, "answer": answer})
        answers = [self.log.answers[k] for k in keys]
        for args, answer in zip(chunk, answers, strict=True):
            self.cache_hook.add_partial("generate_until", (args[0], args[1]), answer)
        return answers

    @torch.no_grad()
    def _generate(self, chunk: list[tuple]) -> list[tuple[str, dict[str, Any]]]:
        """Generate for one batch: (answer, per-sample record) per request."""
        gen_kwargs = dict(chunk[0][1])
        until = gen_kwargs.pop("until", None)
        encoded = [self.encoded_video(self._video_of(args)) for args in chunk]
        prompts = [video_prompt_ids(args[0], self.tokenizer, self.options.conv_template) for args in chunk]  # (L_i,)
        timed = timed_generate(self.model, prompts, [block.video for block, _ in encoded],
                               **self._generation_args(gen_kwargs))  # ids (B, N)
        texts = [_cut(answer_text(row, self.tokenizer, self.model.stop_token_ids), until) for row in timed.ids]
        decode = self.model.decode_video_tokens  # (B,): DyCoke's decode stage, video tokens from layer L on
        n_layers = len(self.model.language_model.model.layers)
        counts = [llm_token_counts(block.video.compression, block.video.stats.tokens_out, n_layers,
                                   None if decode is None else float(decode[i]))
                  for i, (block, _) in enumerate(encoded)]
        return [(text, {**_record(args, block, hit, len(chunk), timed.prefill_ms, timed.decode_ms), **asdict(count)})
                for text, args, (block, hit), count in zip(texts, chunk, encoded, counts, strict=True)]

    def _generation_args(self, gen_kwargs: dict[str, Any]) -> dict[str, Any]:
        """Task generation settings as transformers takes them: greedy drops sampling keys (as the stock class),
        1024 new tokens when the task sets none (the model's `generate` stops on `<|im_end|>` and the eos)."""
        args = {k: v for k, v in gen_kwargs.items() if k != "image_aspect_ratio"}
        args.setdefault("max_new_tokens", DEFAULT_MAX_NEW_TOKENS)
        if not args.get("do_sample", False):
            args["do_sample"] = False
            for key in SAMPLING_KEYS:
                args.pop(key, None)
        return args


def _rank_and_world(accelerator: Accelerator) -> tuple[int, int]:
    """From the Accelerator; lmms-eval's evaluator shards documents by the launcher's RANK / WORLD_SIZE, which
    is what accelerate reports unless it did not set up a process group (torchrun on CPU without
    ACCELERATE_USE_CPU=1), so the launcher's values win when the two disagree."""
    world = int(os.environ.get("WORLD_SIZE", accelerator.num_processes))
    rank = int(os.environ.get("RANK", accelerator.process_index))
    return rank, world


def _process_device(accelerator: Accelerator) -> str:
    if accelerator.num_processes > 1:
        return str(accelerator.device)
    local = int(os.environ.get("LOCAL_RANK", 0))
    return f"cuda:{local}" if torch.cuda.is_available() else "cpu"


def _cut(text: str, until: list[str] | str | None) -> str:
    """The answer up to the first of the task's stop strings."""
    for stop in [until] if isinstance(until, str) else until or []:
        if stop:
            text = text.split(stop, 1)[0]
    return text.strip()


def _record(args: tuple, block: EncodedBlock, hit: bool, batch: int, prefill_ms: float,
            decode_ms: float) -> dict[str, Any]:
    stats = block.video.stats
    return {
        "task": args[4], "doc_id": args[3], "tokens_in": stats.tokens_in, "tokens_spatial": stats.tokens_spatial,
        "tokens_out": stats.tokens_out, "newline_tokens": block.video.newline_tokens, "method": stats.method,
        "tau_spatial": _finite(stats.tau_spatial), "tau_temporal": _finite(stats.tau_temporal),
        "vision_ms": 0.0 if hit else block.vision_ms, "compression_ms": 0.0 if hit else stats.time_ms,
        "cache_hit": hit, "batch_size": batch, "prefill_ms": prefill_ms, "decode_ms": decode_ms,
        "pool_shape": stats.pool_shape,
    }


def _finite(value: float | None) -> float | None:
    return None if value is None or value != value else value

