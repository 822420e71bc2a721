"""The demo's pipeline: one loaded model, and `DemoEngine.run(request)`, a generator of progress snapshots.

It composes the runtime's and the model's stages, the ones `llava.runtime.run_inference` composes (so the token
counts and answers equal the command line's for the same settings):

    decode       llava.video.load_video                                    once per request
    vision       frames_to_pixels -> model.visual_inputs -> [F, T, D]       once per request (the tower runs once,
                 computing the extras every compared method needs)
    compression  model.compress_features(pooled, setting, extras)          once per setting, on the same features
    generation   model.generate(ids, videos=[encoded]) per question        tokens streamed as they are generated

Each stage yields the same `DemoRun` with its fields filled in so far; the page renders it at once, so long work
shows which stage runs instead of a frozen page. A request carries all its own state (nothing per request is kept
on the engine or the model), so two browser sessions never see each other's answers; the app serialises requests
on the one loaded model (Gradio's queue, one at a time), since two at once would only share the same cores.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from llava.conversation import video_prompt_ids
from llava.demo.inputs import DemoInputError, DemoRequest, Setting
from llava.demo.picture import painted_frames
from llava.run_config import RunConfig
from llava.runtime import (
    Answer,
    LoadedModel,
    StageClock,
    TimedGeneration,
    answer_ids,
    answer_text,
    frames_to_pixels,
    generation_kwargs,
    load_for_run,
    peak_memory_mb,
    timed_generate,
)
from llava.video import VideoFrames, load_video

if TYPE_CHECKING:
    from PIL import Image

    from llava.compression import CompressionConfig, VisualExtras
    from llava.model.modeling import EncodedVideo

logger = logging.getLogger(__name__)

STAGES = ("decode", "vision", "compression", "generation", "done")  # the progress the page names, in order


@dataclass
class SettingRun:
    """One setting's part of a run: its compressed video, its pictures, its answers (and the one streaming)."""

    setting: Setting
    encoded: EncodedVideo | None = None
    compression_ms: float | None = None
    pictures: list[tuple[Image.Image, str]] = field(default_factory=list)
    answers: list[Answer] = field(default_factory=list)
    partial: str = ""  # the answer being generated, as far as it has streamed


@dataclass
class DemoRun:
    """A request's progress so far. decode_ms / vision_ms are shared by every setting (run once)."""

    request: DemoRequest
    settings: list[SettingRun]
    stage: str = "decode"
    note: str = ""
    fraction: float = 0.0
    decoded: VideoFrames | None = None
    decode_ms: float | None = None
    vision_ms: float | None = None
    peak_memory: tuple[float, str] | None = None


class AnswerStream:
    """One question answered in a worker thread: iterating yields the answer's text so far as tokens arrive; when
    iteration ends, `answer` holds the runtime's `Answer`, made from the generated ids exactly as
    `llava.runtime.answer_question` makes it (the streamed text is only a preview of it)."""

    def __init__(self, loaded: LoadedModel, video: EncodedVideo, question: str, config: RunConfig) -> None:
        from transformers import TextIteratorStreamer

        self.loaded, self.video, self.question, self.config = loaded, video, question, config
        self.answer: Answer | None = None
        self._streamer = TextIteratorStreamer(loaded.tokenizer, skip_prompt=True, skip_special_tokens=True)
        self._timed: TimedGeneration | None = None
        self._error: Exception | None = None

    def _generate(self) -> None:
        ids = video_prompt_ids(self.question, self.loaded.tokenizer)  # (L,)
        try:
            self._timed = timed_generate(self.loaded.model, ids, [self.video], streamer=self._streamer,
                                                    **generation_kwargs(self.config))
        except Exception as err:  # handed to the consumer's thread, which raises it
            self._error = err
            self._streamer.end()

    def __iter__(self) -> Iterator[str]:
        worker = threading.Thread(target=self._generate, name="demo-generate", daemon=True)
        worker.start()
        text = ""
        for piece in self._streamer:
            text += piece
            yield text
        worker.join()
        if self._error is not None:
            raise self._error
        timed, stops = self._timed, self.loaded.model.stop_token_ids
        row = timed.ids[0]  # (N,)
        self.answer = Answer(self.question, answer_text(row, self.loaded.tokenizer, stops),
                             len(answer_ids(row, stops)), timed.prefill_ms, timed.decode_ms)


class DemoEngine:
    """The loaded model and the run config it was loaded with; `run` answers requests against them."""

    def __init__(self, loaded: LoadedModel, config: RunConfig) -> None:
        self.loaded = loaded
        self.config = config

    @classmethod
    def load(cls, config: RunConfig) -> DemoEngine:
        """Load the checkpoint of `config.model` (a `CheckpointError` names it when that fails)."""
        return cls(load_for_run(config), config)

    @property
    def base_compression(self) -> CompressionConfig:
        """The compression the app starts with: the run config's section, else the checkpoint's own keys."""
        return self.loaded.model.compression_in_effect(self.config.compression)

    @property
    def context_length(self) -> int:
        """Positions the language model takes (the builder's rule, as LLaVA-NeXT reads it)."""
        from llava.model.builder import context_length

        return context_length(self.loaded.model.config)

    def check_fits(self, questions: tuple[str, ...], visual_tokens: int) -> None:
        """Each question's prompt (text + visual tokens) plus the new tokens must fit in the context, else a
        DemoInputError with the numbers: past it the model's positions are undefined."""
        limit, new = self.context_length, self.config.generation.max_new_tokens
        for number, question in enumerate(questions, 1):
            text = len(video_prompt_ids(question, self.loaded.tokenizer)) - 1  # the placeholder is not a token
            if text + visual_tokens + new > limit:
                raise DemoInputError(
                    f"Question {number} does not fit the model's context of {limit} positions: {text} text tokens "
                    f"+ {visual_tokens} visual tokens + up to {new} new tokens = {text + visual_tokens + new}; "
                    "shorten the question" + (" or keep fewer visual tokens" if visual_tokens else ""))

    def run(self, request: DemoRequest) -> Iterator[DemoRun]:
        """Decode, encode once, compress per setting, answer every question per setting; yields the run after
        each step. Raises DemoInputError for a video that does not decode or a question that does not fit."""
        self.check_fits(request.questions, 0)  # before any work: a question too long on its own
        run = DemoRun(request, [SettingRun(setting) for setting in request.settings])
        pooled, extras = yield from self._encode(run)
        for part in run.settings:
            yield from self._compress(run, part, pooled, extras)
        for part in run.settings:
            yield from self._answer(run, part)
        run.stage, run.note, run.fraction = "done", "done", 1.0
        run.peak_memory = peak_memory_mb(self.loaded.model.device)
        yield run

    def _encode(self, run: DemoRun) -> Generator[DemoRun, None, tuple[torch.Tensor, VisualExtras]]:
        request, model = run.request, self.loaded.model
        frames = request.config.video.frames
        run.note = f"decoding {frames} frames of {request.video.name}"
        yield run
        clock = StageClock(torch.device("cpu"))
        try:
            with clock.stage("decode"):
                run.decoded = load_video(request.video, frames, backend=request.config.video.backend)
        except ValueError as err:  # llava.video.VideoDecodeError: missing, empty, truncated, not a video
            # the upload's server-side path means nothing to the user: name the file as they chose it
            raise DemoInputError(f"Video: {err}".replace(str(request.video), request.video.name)) from err
        clock.device = model.device
        run.decode_ms = clock.ms["decode"]
        run.stage, run.fraction = "vision", 0.1
        run.note = f"vision tower on {frames} frames (once, shared by every setting)"
        yield run
        needs = tuple(dict.fromkeys(need for setting in request.settings  # every setting's, from one tower pass
                                    for need in model.visual_needs(setting.compression)))
        with clock.stage("vision"), torch.inference_mode():
            pixels = frames_to_pixels(self.loaded.processor, run.decoded.frames)  # (F, 3, S, S)
            pooled, extras = model.visual_inputs(pixels, needs, request.config.model.frame_batch_size)  # (F, T, D)
        run.vision_ms = clock.ms["vision"]
        return pooled, extras

    def _compress(self, run: DemoRun, part: SettingRun, pooled: torch.Tensor,
                  extras: VisualExtras) -> Iterator[DemoRun]:
        model, compression = self.loaded.model, part.setting.compression
        run.stage, run.fraction = "compression", 0.3
        run.note = f"compressing for setting {part.setting.label} ({compression.method})"
        yield run
        clock = StageClock(model.device)
        with clock.stage("compression"), torch.inference_mode():
            part.encoded = model.compress_features(pooled, compression, timed=True, extras=extras)  # (K [+ nl], D)
        part.compression_ms = clock.ms["compression"]
        decoded = run.decoded
        part.pictures = painted_frames(decoded.frames, part.encoded.assignment.cpu().numpy(),  # (F, T)
                                       [int(i) for i in decoded.indices])
        self.check_fits(run.request.questions, part.encoded.tokens.shape[0])

    def _answer(self, run: DemoRun, part: SettingRun) -> Iterator[DemoRun]:
        questions = run.request.questions
        run.stage = "generation"
        for number, question in enumerate(questions, 1):
            run.note = f"setting {part.setting.label}: answering question {number} of {len(questions)}"
            done = sum(len(p.answers) for p in run.settings)
            run.fraction = 0.4 + 0.6 * done / (len(questions) * len(run.settings))
            stream = AnswerStream(self.loaded, part.encoded, question, run.request.config)
            for text in stream:
                part.partial = text
                yield run
            part.answers.append(stream.answer)
            part.partial = ""
            yield run
