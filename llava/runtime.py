"""The inference runtime every front end shares: load a run's model, time its stages, answer questions.

`run_inference(config, video, questions)` -> an `InferenceReport`. It composes the model's own stages, the ones
`model.generate` composes, and only adds a clock around them, so its answers are `model.generate`'s by construction:

    decode       video file -> uint8 frames [F, H, W, 3]                       (llava.video)
    vision       frames -> pixels (`frames_to_pixels`) -> model.visual_inputs -> [F, T, D] (+ the extras the
                 method needs, from the same tower pass)
    compression  model.compress_features -> EncodedVideo: [K, D] tokens + stats + assignment [F, T]
    prefill      model.generate(ids, videos=[encoded]): the prompt's forward pass (first logits + KV cache)
    generate     the remaining tokens of the same call (transformers' generation)

The video is decoded, encoded and compressed once; each question reuses the compressed tokens (SCC does not
look at the text), so several questions cost one vision and one compression pass. The video is decoded before the
model loads, so a bad file fails at once. The pieces are public because evaluation composes them too
(`load_for_run`, `frames_to_pixels`, `timed_generate`, `answer_ids` / `answer_text`): one home for each step.
Every time is read from `llava.compression.timing`'s device-synced clock. Quiet: logging only. Errors a caller
can cause (video, checkpoint, config) are ValueError / OSError subclasses naming the problem.
"""
from __future__ import annotations

import math
import resource
import sys
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from llava.compression.timing import synced_now
from llava.constants import TINY_MARKER
from llava.conversation import video_prompt_ids
from llava.run_config import RunConfig, config_to_dict

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from llava.model.fastv import LLMTokenCounts
    from llava.model.image_processor import SiglipVideoProcessor
    from llava.model.modeling import EncodedVideo, LlavaOnevisionVideoModel
    from llava.video import VideoFrames

STAGES = ("decode", "vision", "compression", "prefill", "generate")
RANDOM_WARNING = (
    "checkpoint {path} is a tiny RANDOM test checkpoint: the answer is meaningless (token counts and timings "
    "are still real); use a real checkpoint (checkpoints/README.md) for answers"
)


class CheckpointError(ValueError):
    """The checkpoint could not be found, fetched or loaded; the message names it."""


@dataclass
class LoadedModel:
    """What `load_for_run` returns: the builder's outputs plus where the weights came from."""

    tokenizer: PreTrainedTokenizerBase
    model: LlavaOnevisionVideoModel
    processor: SiglipVideoProcessor
    checkpoint_dir: Path
    random_tiny: bool
    load_ms: float


@dataclass
class Answer:
    """One question's answer and what generating it cost (the video's stages are shared, see InferenceReport)."""

    question: str
    answer: str
    new_tokens: int
    prefill_ms: float
    generate_ms: float


@dataclass
class InferenceReport:
    """Everything one run did: the answers, what compression did, time per stage and peak memory.

    answers: one per question, in order (all from the same compressed tokens).
    frames = F frames sampled (`frame_indices` into the video's `total_frames`; `repeated_frames` when the video
    had fewer frames than requested, `video_note` says what the decoder noticed).
    tokens_before = F * T pooled tokens; tokens_after = K visual tokens sent to the LLM, newline excluded
    (`newline_tokens` says how many newline tokens were appended after them); retention = after / before.
    timings_ms: one entry per stage in STAGES; decode, vision and compression ran once, prefill and generate are
    summed over the questions (each Answer has its own). peak_memory_kind: "cuda_max_allocated" (summed over GPUs)
    or "process_rss_peak" (CPU: the process's maximum resident set, which includes Python and the weights).
    Tokens per LLM layer (`llava.model.fastv.llm_token_counts`): video_tokens_llm_input = N video tokens entering
    the LLM (tokens_after for a pre-LLM method, all F * T for FastV); video_tokens_after_prune = N' seen by layers
    prune_layer (K) and up (= N without an in-LLM method); video_tokens_layer_mean = (K * N + (L - K) * N') / L over
    the llm_layers L, the count decoder FLOPs scale with (FastV at 10%, K = 3 of 28 layers: 19.6% of N). DyCoke
    with its decode stage: N = the stage-1 tokens, prune_layer = its L, N' = the video tokens layers L and up
    attended to while decoding, averaged over the decode steps and the questions (prefill sees all N).
    """

    answers: list[Answer]
    video: str
    model: str
    checkpoint: str
    device: str
    dtype: str
    frames: int
    frames_requested: int
    frame_indices: list[int]
    total_frames: int
    repeated_frames: bool
    video_backend: str
    video_note: str | None
    tokens_per_frame: int
    tokens_before: int
    tokens_spatial: int | None
    tokens_after: int
    newline_tokens: int
    retention: float
    method: str
    tau_spatial: float | None
    tau_temporal: float | None
    timings_ms: dict[str, float]
    load_ms: float
    peak_memory_mb: float
    peak_memory_kind: str
    random_checkpoint: bool
    warning: str | None = None
    visualization: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    compression_in_effect: dict[str, Any] = field(default_factory=dict)
    compression_stats: dict[str, Any] = field(default_factory=dict)  # llava.compression's CompressionStats, as is
    llm_layers: int | None = None
    prune_layer: int | None = None
    video_tokens_llm_input: int | None = None
    video_tokens_after_prune: float | None = None
    video_tokens_layer_mean: float | None = None

    @property
    def answer(self) -> str:
        """The first (for a one-question run: the) answer."""
        return self.answers[0].answer

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data (non-finite floats -> None, so the output is strict JSON)."""
        return _finite(asdict(self))


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


# ---- loading ------------------------------------------------------------------------------------------------
def load_for_run(config: RunConfig) -> LoadedModel:
    """Resolve and load the checkpoint of `config.model` with the run's compression and newline policy.

    The checkpoint is resolved and its config.json read once, here, and handed to the builder. Any failure to
    find, fetch or read it becomes one CheckpointError naming it, so a front end can show one line instead of a
    traceback.
    """
    from llava.model.builder import load_from_dir
    from llava.model.checkpoint import read_config, resolve_checkpoint

    section = config.model
    if section.device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"model.device is {section.device!r} but CUDA is not available here; use --device cpu "
                         "(or auto)")
    start = synced_now("cpu")  # nothing is queued on a device before the load
    try:
        checkpoint_dir = resolve_checkpoint(section.path)
        raw = read_config(checkpoint_dir)
        tokenizer, model, processor = load_from_dir(
            checkpoint_dir, raw,
            device_map="auto" if section.device == "auto" else {"": section.device},
            torch_dtype=section.dtype,
            attn_implementation=None if section.attn_implementation == "auto" else section.attn_implementation,
            compression=config.compression,
            newline=section.newline,
        )
    except (ValueError, OSError) as err:
        message = str(err) if section.path in str(err) else f"checkpoint {section.path!r}: {err}"
        raise CheckpointError(message) from err
    load_ms = (synced_now(model.device) - start) * 1000.0
    return LoadedModel(tokenizer, model, processor, checkpoint_dir, is_random_tiny(raw), load_ms)


def is_random_tiny(raw: dict[str, Any]) -> bool:
    """True for the tiny random test checkpoints of `llava.testing.tiny_checkpoint` (their config.json marker)."""
    return raw.get(TINY_MARKER) is True


# ---- stages -------------------------------------------------------------------------------------------------
def frames_to_pixels(processor: SiglipVideoProcessor, frames: np.ndarray) -> torch.Tensor:
    """uint8 frames [F, H, W, 3] -> float32 pixel values [F, 3, S, S]: the one video-to-pixels step of the CLI,
    evaluation and calibration (SigLIP resize and normalisation, `SiglipVideoProcessor`)."""
    return processor.preprocess(frames, return_tensors="pt")["pixel_values"]  # (F, 3, S, S)


class StageClock:
    """Wall time per stage in ms, read from the device-synced clock (`llava.compression.timing`), so GPU work is
    counted in the stage that launched it, not in the one that next waits on it."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.ms: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = synced_now(self.device)
        yield
        self.ms[name] = (synced_now(self.device) - start) * 1000.0


class PrefillMark:
    """A logits processor that only notes when generation first needs one: the prompt's forward pass (prefill)
    is done then, so one `generate` call splits into prefill and decode time without a second decode loop."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.at: float | None = None

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.at is None:
            self.at = synced_now(self.device)
        return scores


@dataclass
class TimedGeneration:
    """`model.generate`'s new ids [B, N] and its time split at the first logits (the prefill mark)."""

    ids: torch.Tensor
    prefill_ms: float
    decode_ms: float


def generation_kwargs(config: RunConfig) -> dict[str, Any]:
    """The run's generation section as `generate` keywords: greedy at temperature 0, else sampling."""
    gen = config.generation
    sampling = {"do_sample": True, "temperature": gen.temperature, "top_p": gen.top_p} if gen.temperature else {
        "do_sample": False}
    return {"max_new_tokens": gen.max_new_tokens, **sampling}


def timed_generate(model: LlavaOnevisionVideoModel, input_ids: torch.Tensor | list[torch.Tensor],
                   videos: list[EncodedVideo], **generate_kwargs: Any) -> TimedGeneration:
    """`model.generate(input_ids, videos=videos, ...)` timed on the model's device: prefill up to the first
    logits, decode after them. The CLI and the lmms-eval model time generation through here."""
    from transformers import LogitsProcessorList

    mark = PrefillMark(model.device)
    start = synced_now(model.device)
    out = model.generate(input_ids, videos=videos, logits_processor=LogitsProcessorList([mark]), **generate_kwargs)
    end = synced_now(model.device)
    first = mark.at if mark.at is not None else end
    return TimedGeneration(out, (first - start) * 1000.0, (end - first) * 1000.0)


def answer_ids(ids: torch.Tensor | Sequence[int], stop_ids: Collection[int]) -> list[int]:
    """One row of generated ids [N] -> the answer's ids: everything before the first stop id. Generation ends at
    that token, so what follows it is batch padding (pad = the first stop id) or nothing."""
    values = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
    stops = set(stop_ids)
    end = next((i for i, token in enumerate(values) if token in stops), len(values))
    return values[:end]


def answer_text(ids: torch.Tensor | Sequence[int], tokenizer: PreTrainedTokenizerBase,
                stop_ids: Collection[int]) -> str:
    """One row of generated ids [N] -> the answer text: `answer_ids`, decoded without special tokens, stripped."""
    return tokenizer.decode(answer_ids(ids, stop_ids), skip_special_tokens=True).strip()


def answer_question(loaded: LoadedModel, video: EncodedVideo, question: str, config: RunConfig) -> Answer:
    """`model.generate` on the compressed video, timed: prefill up to the first logits, generate the rest."""
    model = loaded.model
    ids = video_prompt_ids(question, loaded.tokenizer)  # (L,)
    timed = timed_generate(model, ids, [video], **generation_kwargs(config))
    row = timed.ids[0]  # (N,)
    text = answer_text(row, loaded.tokenizer, model.stop_token_ids)
    return Answer(question, text, len(answer_ids(row, model.stop_token_ids)), timed.prefill_ms, timed.decode_ms)


def peak_memory_mb(device: torch.device) -> tuple[float, str]:
    """(MB, kind): CUDA max allocated summed over GPUs on GPU runs, else the process's peak RSS."""
    if device.type == "cuda":
        total = sum(torch.cuda.max_memory_allocated(i) for i in range(torch.cuda.device_count()))
        return total / 2**20, "cuda_max_allocated"
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KB on Linux, bytes on macOS
    return (peak / 2**20 if sys.platform == "darwin" else peak / 1024), "process_rss_peak"


def _reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        for i in range(torch.cuda.device_count()):
            torch.cuda.reset_peak_memory_stats(i)


# ---- the run ------------------------------------------------------------------------------------------------
def run_inference(
    config: RunConfig,
    video: str | Path,
    questions: str | Sequence[str],
    visualize: str | Path | None = None,
    loaded: LoadedModel | None = None,
) -> InferenceReport:
    """Answer each question about `video` with the run `config` (the video is encoded and compressed once);
    optionally draw the merge picture to `visualize`.

    The video is decoded before the model loads, so a bad file fails in milliseconds, not after a 7B load.
    loaded: a model from `load_for_run` to reuse across calls; the compression is `config`'s section, else the
    model's default (resolved once, at load, from the checkpoint's keys); the newline policy is the load-time one.
    """
    from llava.model.fastv import llm_token_counts
    from llava.video import load_video

    questions = [questions] if isinstance(questions, str) else list(questions)
    if not questions or any(not q.strip() for q in questions):
        raise ValueError(f"every question must be non-empty text, got {questions!r}")
    clock = StageClock(torch.device("cpu"))
    with clock.stage("decode"):
        decoded = load_video(Path(video), config.video.frames, backend=config.video.backend)
    loaded = loaded if loaded is not None else load_for_run(config)
    model = loaded.model
    clock.device = model.device
    _reset_peak_memory(model.device)
    compression = model.compression_in_effect(config.compression)
    with torch.inference_mode():
        with clock.stage("vision"):
            pixels = frames_to_pixels(loaded.processor, decoded.frames)  # (F, 3, S, S)
            needs = model.visual_needs(compression)
            pooled, extras = model.visual_inputs(pixels, needs, config.model.frame_batch_size)  # (F, T, D)
        with clock.stage("compression"):
            encoded = model.compress_features(pooled, compression, timed=True, extras=extras)  # (K [+ newline], D)
        answers, decode = [], []  # decode: DyCoke's decode stage, video tokens from layer L on per question
        for question in questions:
            answers.append(answer_question(loaded, encoded, question, config))
            if model.decode_video_tokens is not None:
                decode.append(float(model.decode_video_tokens[0]))
    clock.ms["prefill"] = sum(a.prefill_ms for a in answers)
    clock.ms["generate"] = sum(a.generate_ms for a in answers)
    memory = peak_memory_mb(model.device)
    picture = _draw(visualize, decoded, encoded) if visualize is not None else None
    counts = llm_token_counts(encoded.compression, encoded.stats.tokens_out, len(model.language_model.model.layers),
                              sum(decode) / len(decode) if decode else None)
    return _report(config, loaded, Path(video), decoded, encoded, answers, clock.ms, memory, picture, counts)


def _draw(path: str | Path, decoded: VideoFrames, encoded: EncodedVideo) -> str:
    from llava.visualize import save_assignment_grid

    stats = encoded.stats
    labels = [f"#{i}  video frame {idx}" for i, idx in enumerate(decoded.indices)]
    title = f"{stats.method}: {stats.tokens_out} of {stats.tokens_in} tokens kept ({stats.retention:.1%})"
    assignment = encoded.assignment.cpu().numpy()  # (F, T)
    return str(save_assignment_grid(path, decoded.frames, assignment, frame_labels=labels, title=title))


def _report(
    config: RunConfig, loaded: LoadedModel, video: Path, decoded: VideoFrames, encoded: EncodedVideo,
    answers: list[Answer], timings: dict[str, float], memory: tuple[float, str], picture: str | None,
    counts: LLMTokenCounts,
) -> InferenceReport:
    stats, model = encoded.stats, loaded.model
    return InferenceReport(
        answers=answers, video=str(video), model=config.model.path, checkpoint=str(loaded.checkpoint_dir),
        device=str(model.device), dtype=str(model.dtype).removeprefix("torch."),
        frames=encoded.num_frames, frames_requested=config.video.frames,
        frame_indices=[int(i) for i in decoded.indices], total_frames=int(decoded.total_frames),
        repeated_frames=bool(decoded.repeated_frames), video_backend=decoded.backend,
        video_note=decoded.note or None, tokens_per_frame=encoded.tokens_per_frame, tokens_before=stats.tokens_in,
        tokens_spatial=stats.tokens_spatial, tokens_after=stats.tokens_out, newline_tokens=encoded.newline_tokens,
        retention=stats.retention, method=stats.method, tau_spatial=stats.tau_spatial,
        tau_temporal=stats.tau_temporal, timings_ms={name: timings[name] for name in STAGES},
        load_ms=loaded.load_ms, peak_memory_mb=memory[0], peak_memory_kind=memory[1],
        random_checkpoint=loaded.random_tiny,
        warning=RANDOM_WARNING.format(path=loaded.checkpoint_dir) if loaded.random_tiny else None,
        visualization=picture, config=config_to_dict(config), compression_in_effect=asdict(encoded.compression),
        compression_stats=asdict(stats),
        **asdict(counts),
    )
