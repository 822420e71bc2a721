"""Video question answering: `python -m llava.infer --video clip.mp4 --question "..."` (or `llava-infer`).

Flags -> a `RunConfig` (YAML + dotted overrides, `llava.run_config.load_config`) -> `run_inference(config, video,
questions)` -> an `InferenceReport` -> printed (text, or one JSON object with `--json`). `run_inference` is the
library part: quiet (logging only). It composes the model's own stages, the ones `model.generate` composes, and
only adds a clock around them, so its answers are `model.generate`'s by construction:

    decode       video file -> uint8 frames [F, H, W, 3]                       (llava.video)
    vision       frames -> pixels -> model.pooled_features -> [F, T, D]
    compression  model.compress_features -> EncodedVideo: [K, D] tokens + stats + assignment [F, T]
    prefill      model.generate(ids, videos=[encoded]): the prompt's forward pass (first logits + KV cache)
    generate     the remaining tokens of the same call (transformers' generation)

The video is decoded, encoded and compressed once; each question reuses the compressed tokens (SCC does not
look at the text), so several questions cost one vision and one compression pass. The video is decoded before the
model loads, so a bad file fails at once. Errors a user can cause (video, checkpoint, config) are ValueError /
OSError subclasses naming the problem; `main` prints them as one line and exits with code 2.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import resource
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from llava.compression import METHODS
from llava.compression.types import PRECISIONS
from llava.constants import TINY_MARKER
from llava.conversation import video_prompt_ids
from llava.model.model_config import DTYPE_NAMES
from llava.run_config import RunConfig, config_to_dict, load_config
from llava.video import BACKENDS

if TYPE_CHECKING:
    from llava.model.modeling import EncodedVideo
    from llava.video import VideoFrames

logger = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).resolve().parent  # configs and the demo clip ship inside the package (wheels too)
CONFIG_DIR = PACKAGE_DIR / "configs"
DEFAULT_CONFIG = CONFIG_DIR / "llava-ov-0.5b-scissor.yaml"
DEFAULT_VIDEO = PACKAGE_DIR / "assets" / "demo.mp4"
DEFAULT_QUESTION = "Describe this video."
STAGES = ("decode", "vision", "compression", "prefill", "generate")
# config.json key that tiny random test checkpoints carry; older ones are recognised by their tiny tower.
RANDOM_WARNING = (
    "checkpoint {path} is a tiny RANDOM test checkpoint: the answer is meaningless (token counts and timings "
    "are still real); use a real checkpoint (checkpoints/README.md) for answers"
)
DEBUG_HINT = "(--debug shows the traceback)"


class CheckpointError(ValueError):
    """The checkpoint could not be found, fetched or loaded; the message names it."""


@dataclass
class LoadedModel:
    """What `load_for_run` returns: the builder's outputs plus where the weights came from."""

    tokenizer: Any
    model: Any
    processor: Any
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

    Any failure to find, fetch or read the checkpoint becomes one CheckpointError naming it, so a front end can
    show one line instead of a traceback.
    """
    from llava.model.builder import load_pretrained_model
    from llava.model.checkpoint import read_config, resolve_checkpoint

    section = config.model
    if section.device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"model.device is {section.device!r} but CUDA is not available here; use --device cpu "
                         "(or auto)")
    start = time.perf_counter()
    try:
        checkpoint_dir = resolve_checkpoint(section.path)
        raw = read_config(checkpoint_dir)
        tokenizer, model, processor, _ = load_pretrained_model(
            str(checkpoint_dir),
            device_map="auto" if section.device == "auto" else None,
            device=None if section.device == "auto" else section.device,
            torch_dtype=section.dtype,
            attn_implementation=None if section.attn_implementation == "auto" else section.attn_implementation,
            compression=config.compression,
            newline=section.newline,
        )
    except (ValueError, OSError) as err:
        message = str(err) if section.path in str(err) else f"checkpoint {section.path!r}: {err}"
        raise CheckpointError(message) from err
    load_ms = (time.perf_counter() - start) * 1000.0
    return LoadedModel(tokenizer, model, processor, checkpoint_dir, is_random_tiny(raw), load_ms)


def is_random_tiny(raw: dict[str, Any]) -> bool:
    """True for the tiny random test checkpoints of `llava.testing.tiny_checkpoint` (their config.json marker)."""
    return raw.get(TINY_MARKER) is True


# ---- stages -------------------------------------------------------------------------------------------------
class StageClock:
    """Wall time per stage in ms; CUDA is synchronized before each clock read so GPU work is counted where it
    was launched, not where it is next waited on."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.ms: dict[str, float] = {}

    def sync(self) -> None:
        if self.device.type == "cuda":  # every GPU: a model spread by device_map="auto" works on several
            for i in range(torch.cuda.device_count()):
                torch.cuda.synchronize(i)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self.sync()
        start = time.perf_counter()
        yield
        self.sync()
        self.ms[name] = (time.perf_counter() - start) * 1000.0


class _PrefillMark:
    """A logits processor that only notes when generation first needs one: the prompt's forward pass (prefill)
    is done then, so one `generate` call splits into prefill and decode time without a second decode loop."""

    def __init__(self, clock: StageClock) -> None:
        self.clock = clock
        self.at: float | None = None

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.at is None:
            self.clock.sync()
            self.at = time.perf_counter()
        return scores


def generation_kwargs(config: RunConfig) -> dict[str, Any]:
    """The run's generation section as `generate` keywords: greedy at temperature 0, else sampling."""
    gen = config.generation
    sampling = {"do_sample": True, "temperature": gen.temperature, "top_p": gen.top_p} if gen.temperature else {
        "do_sample": False}
    return {"max_new_tokens": gen.max_new_tokens, **sampling}


def timed_generate(model: Any, clock: StageClock, input_ids: Any, videos: list[EncodedVideo],
                   **generate_kwargs: Any) -> tuple[torch.Tensor, float, float]:
    """`model.generate(input_ids, videos=videos, ...)` with `clock` around it: (new ids [B, N], prefill ms up to
    the first logits, decode ms after them). The CLI and the lmms-eval model time generation through here."""
    from transformers import LogitsProcessorList

    mark = _PrefillMark(clock)
    clock.sync()
    start = time.perf_counter()
    out = model.generate(input_ids, videos=videos, logits_processor=LogitsProcessorList([mark]), **generate_kwargs)
    clock.sync()
    end = time.perf_counter()
    first = mark.at if mark.at is not None else end
    return out, (first - start) * 1000.0, (end - first) * 1000.0


def answer_question(loaded: LoadedModel, video: EncodedVideo, question: str, config: RunConfig,
                    clock: StageClock) -> Answer:
    """`model.generate` on the compressed video, timed: prefill up to the first logits, generate the rest."""
    model = loaded.model
    ids = video_prompt_ids(question, loaded.tokenizer)  # (L,)
    out, prefill_ms, generate_ms = timed_generate(model, clock, ids, [video], **generation_kwargs(config))
    answer_ids = [t for t in out[0].tolist() if t not in model.stop_token_ids]
    text = loaded.tokenizer.decode(answer_ids, skip_special_tokens=True).strip()
    return Answer(question, text, len(answer_ids), prefill_ms, generate_ms)


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
    compression = config.compression if config.compression is not None else model.default_compression
    with torch.inference_mode():
        with clock.stage("vision"):
            pixels = loaded.processor.preprocess(decoded.frames, return_tensors="pt")["pixel_values"]  # (F, 3, S, S)
            pooled = model.pooled_features(pixels, config.model.frame_batch_size)  # (F, T, D)
        with clock.stage("compression"):
            encoded = model.compress_features(pooled, compression, timed=True)  # tokens (K [+ newline], D)
        answers = [answer_question(loaded, encoded, q, config, clock) for q in questions]
    clock.ms["prefill"] = sum(a.prefill_ms for a in answers)
    clock.ms["generate"] = sum(a.generate_ms for a in answers)
    memory = peak_memory_mb(model.device)
    picture = _draw(visualize, decoded, encoded) if visualize is not None else None
    return _report(config, loaded, Path(video), decoded, encoded, answers, clock.ms, memory, picture)


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
    )


# ---- command line -------------------------------------------------------------------------------------------
def resolve_config_path(value: str | Path) -> Path:
    """A config as given if it exists, else a name under the repo's configs/ (with or without .yaml), so the
    default and `--config llava-ov-7b-scissor` work from any directory."""
    path = Path(value).expanduser()
    if path.is_file():
        return path
    for candidate in (CONFIG_DIR / str(value), CONFIG_DIR / f"{value}.yaml"):
        if candidate.is_file():
            return candidate
    return path  # load_config names it in its FileNotFoundError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llava-infer",
        description="Answer a question about one video with LLaVA-OneVision + LLaVA-Scissor token compression. "
        "With no arguments: the default config on the demo clip.",
    )
    add = parser.add_argument
    add("--video", type=Path, default=None, help=f"video file (default: the demo clip {DEFAULT_VIDEO})")
    add("--question", action="append", dest="questions", metavar="QUESTION",
        help=f"question about the video; repeat for several (the video is encoded and compressed once; default: "
        f"{DEFAULT_QUESTION!r})")
    add("--questions-file", type=Path, metavar="PATH", help="a text file with one question per line (added after "
        "any --question)")
    add("--config", default=str(DEFAULT_CONFIG), help="YAML run config, or a name under configs/ (default: "
        "configs/llava-ov-0.5b-scissor.yaml)")
    add("--model", help="checkpoint directory or hub id (overrides model.path)")
    add("--retention-ratio", type=float, help="keep K = max(1, round(r*F*T)) visual tokens, r in (0, 1]")
    add("--tau", type=float, help="SCC similarity threshold in [-1, 1] (paper mode: K varies per video)")
    add("--method", choices=METHODS, help="compression method (none = keep every token)")
    add("--precision", choices=PRECISIONS, help="SCC arithmetic: float32 (default) or input (the features' dtype, "
        "as the authors' fp16 runs; compression.precision)")
    add("--frames", type=int, help="frames sampled uniformly from the video (video.frames)")
    add("--backend", choices=BACKENDS, help="video decoder (video.backend)")
    add("--device", help="cpu, cuda, cuda:1 or auto (model.device)")
    add("--dtype", choices=DTYPE_NAMES, help="model.dtype")
    add("--frame-batch-size", type=int, help="frames per vision-tower batch (model.frame_batch_size)")
    add("--max-new-tokens", type=int, help="generation.max_new_tokens")
    add("--temperature", type=float, help="generation.temperature (0 = greedy)")
    add("--json", action="store_true", help="print one JSON object instead of text")
    add("--visualize", type=Path, metavar="PATH", help="write a PNG of the frames coloured by merged token")
    add("--debug", action="store_true", help="show tracebacks")
    add("-v", "--verbose", action="store_true", help="log progress (INFO) to stderr")
    return parser


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Flags -> dotted config overrides (only the flags given). --method none clears the budget first, so
    switching a compressed config off needs one flag."""
    if args.tau is not None and args.retention_ratio is not None:
        raise ValueError("pass either --tau (paper mode) or --retention-ratio (exact budget), not both")
    overrides: dict[str, Any] = {}
    if args.method == "none":
        overrides["compression.tau"] = None  # also drops retention_ratio (load_config switches budget modes)
    flags = {
        "model.path": args.model, "model.device": args.device, "model.dtype": args.dtype,
        "model.frame_batch_size": args.frame_batch_size, "video.frames": args.frames, "video.backend": args.backend,
        "compression.tau": args.tau, "compression.retention_ratio": args.retention_ratio,
        "compression.method": args.method, "compression.precision": args.precision,
        "generation.max_new_tokens": args.max_new_tokens, "generation.temperature": args.temperature,
    }
    overrides.update({key: value for key, value in flags.items() if value is not None})
    return overrides


def format_report(report: InferenceReport) -> str:
    """The human-readable report: the answers first, then what compression did and what it cost."""
    t = report.timings_ms
    newline = f"+ {report.newline_tokens} newline token(s) added" if report.newline_tokens else "no newline token"
    taus = f"spatial {_num(report.tau_spatial)}, temporal {_num(report.tau_temporal)}"
    memory_kind = "CUDA max allocated" if report.peak_memory_kind == "cuda_max_allocated" else "process RSS peak"
    several = len(report.answers) > 1
    lines = [f"Q: {a.question}\nA: {a.answer}" if several else a.answer for a in report.answers]
    new_tokens = sum(a.new_tokens for a in report.answers)
    per_question = f", {len(report.answers)} questions on one encoding" if several else ""
    lines += [
        "",
        f"checkpoint   {report.checkpoint} ({report.device}, {report.dtype}; loaded in {report.load_ms:.0f} ms)",
        f"frames       {report.frames} sampled of {report.total_frames} ({report.video_backend}; indices "
        f"{_indices(report.frame_indices)})",
        f"tokens       {report.tokens_before} before ({report.frames} x {report.tokens_per_frame}) -> "
        f"{report.tokens_after} after, {report.retention:.1%} retained ({report.method}; {newline})",
        f"tau          {taus}",
        "time (ms)    " + " | ".join(f"{name} {t[name]:.1f}" for name in STAGES)
        + f"  ({new_tokens} new tokens{per_question})",
        f"peak memory  {report.peak_memory_mb:.0f} MB ({memory_kind})",
    ]
    if report.video_note:
        lines.append(f"video note   {report.video_note}")
    if report.visualization:
        lines.append(f"picture      {report.visualization}")
    return "\n".join(lines)


def read_questions(args: argparse.Namespace) -> list[str]:
    """--question (repeatable) then --questions-file lines (blank lines skipped); the default when neither."""
    questions = list(args.questions or [])
    if args.questions_file is not None:
        if not args.questions_file.is_file():
            raise FileNotFoundError(f"questions file {args.questions_file} does not exist")
        from_file = [line.strip() for line in args.questions_file.read_text().splitlines() if line.strip()]
        if not from_file:
            raise ValueError(f"questions file {args.questions_file} holds no question (one per line)")
        questions += from_file
    return questions or [DEFAULT_QUESTION]


def _num(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.4f}"


def _indices(indices: list[int], limit: int = 12) -> str:
    shown = ", ".join(str(i) for i in indices[:limit])
    return f"[{shown}{', ...' if len(indices) > limit else ''}]"


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())


def main(argv: list[str] | None = None) -> int:
    """Parse flags, run, print. Exit 0 on success, 2 on a bad input (video, checkpoint, config), one line each."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    video = args.video if args.video is not None else DEFAULT_VIDEO
    try:
        config = load_config(resolve_config_path(args.config), overrides_from_args(args))
        if args.video is None and not DEFAULT_VIDEO.is_file():
            raise FileNotFoundError(f"the demo clip {DEFAULT_VIDEO} is missing; pass --video PATH, or recreate it "
                                    f"with `python -m llava.demo_clip {DEFAULT_VIDEO}`")
        report = run_inference(config, video, read_questions(args), visualize=args.visualize)
    except CheckpointError as err:
        if args.debug:
            raise
        print(f"error: {_one_line(err)} (with --model DIR; checkpoints/README.md) {DEBUG_HINT}", file=sys.stderr)
        return 2
    except (ValueError, TypeError, OSError, ImportError) as err:
        if args.debug:
            raise
        print(f"error: {_one_line(err)} {DEBUG_HINT}", file=sys.stderr)
        return 2
    if report.warning:
        print(f"WARNING: {report.warning}", file=sys.stderr)
    print(json.dumps(report.to_dict()) if args.json else format_report(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
