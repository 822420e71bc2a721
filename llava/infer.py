"""Video question answering from the command line: `python -m llava.infer --video clip.mp4 --question "..."` (or
`llava-infer`).

Flags -> a `RunConfig` (YAML + dotted overrides, `llava.run_config.load_config`) -> `llava.runtime.run_inference(
config, video, questions)` -> an `InferenceReport` -> printed (text, or one JSON object with `--json`). This module
only parses, validates and prints; the runtime is `llava.runtime`, which evaluation imports (never this module).

Flags and the run config are parsed and validated before torch is imported: the parser's choices come from the
torch-free `llava.config_types` and `llava.video`, and `llava.run_config` is torch-free. So `--help`, a bad flag or
a bad value (`--retention-ratio 2`) answers in about a second instead of after torch's and transformers' import.
Errors a user can cause (video, checkpoint, config) are printed as one line, led by the flag that set the bad value
(`--retention-ratio: compression.retention_ratio must be in (0, 1], got 2.0`), with exit code 2. Text output has its
control characters (other than newline and tab) escaped, because a random checkpoint's answer can hold raw bytes
that would otherwise drive the terminal; JSON output escapes them already.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llava.config_types import DTYPE_NAMES, METHODS, PRECISIONS
from llava.run_config import CONFIG_DIR, RunConfig, load_config, resolve_config_path
from llava.video import BACKENDS

if TYPE_CHECKING:
    from llava.runtime import InferenceReport

PACKAGE_DIR = Path(__file__).resolve().parent  # the demo clip ships inside the package (wheels too)
DEFAULT_CONFIG = CONFIG_DIR / "llava-ov-0.5b-scissor.yaml"
DEFAULT_VIDEO = PACKAGE_DIR / "assets" / "demo.mp4"
DEFAULT_QUESTION = "Describe this video."
DEBUG_HINT = "(--debug shows the traceback)"
CHECKPOINT_HINT = "(with --model DIR; checkpoints/README.md)"
# each config flag and the run config field it sets (dotted, as `load_config` takes overrides)
FLAG_FIELDS = {
    "--model": "model.path", "--device": "model.device", "--dtype": "model.dtype",
    "--frame-batch-size": "model.frame_batch_size", "--frames": "video.frames", "--backend": "video.backend",
    "--tau": "compression.tau", "--retention-ratio": "compression.retention_ratio",
    "--pool-shape": "compression.pool_shape", "--dycoke-k": "compression.dycoke_k",
    "--dycoke-l": "compression.dycoke_l", "--dycoke-p": "compression.dycoke_p",
    "--fastv-layer": "compression.fastv_layer",
    "--precision": "compression.precision", "--method": "compression.method",  # method last: it decides
    "--max-new-tokens": "generation.max_new_tokens", "--temperature": "generation.temperature",
}
CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # C0 and C1 controls except tab (09), newline (0a)


# ---- flags -> run config -------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """The flags; every choice list is the config's own (`llava.config_types`, `llava.video`)."""
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
    add("--pool-shape", type=pool_shape, metavar="T,H,W", help="pllava's output shape (frames, rows, columns), "
        "instead of a retention ratio (compression.pool_shape)")
    add("--dycoke-k", type=float, help="dycoke's k in (0, 1], instead of a retention ratio: each frame it prunes "
        "keeps int((1 - k) * T) tokens (compression.dycoke_k)")
    add("--dycoke-p", type=float, help="dycoke's stage 2 (decode-time KV pruning) and its rate P in (0, 1]: at a "
        "pruning step layers L and up attend to int(N * (1 - P)) of the N video tokens; unset: stage 1 only; "
        "0.8 = the official evaluation's (compression.dycoke_p)")
    add("--dycoke-l", type=int, help="dycoke's stage-2 layer L (default 3, with --dycoke-p): L in [1, LLM layers - 1] "
        "(compression.dycoke_l)")
    add("--fastv-layer", type=int, help="fastv's K (default 3): layers K and up see only the kept video tokens; "
        "K in [1, LLM layers - 1] (compression.fastv_layer)")
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


def pool_shape(text: str) -> list[int]:
    """`--pool-shape 16,8,8` -> [16, 8, 8] (the config checks the values)."""
    parts = text.split(",")
    if len(parts) != 3 or not all(part.strip().isdigit() for part in parts):
        raise argparse.ArgumentTypeError(f"expected three comma-separated integers T,H,W such as 16,8,8, got {text!r}")
    return [int(part) for part in parts]


def _flag_value(args: argparse.Namespace, flag: str) -> Any:
    return getattr(args, flag.removeprefix("--").replace("-", "_"))


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Flags -> dotted config overrides (only the flags given, in `FLAG_FIELDS` order: the method last). A budget
    flag clears the config's other budget keys (`load_config`); --method none clears them all, so switching a
    compressed config off needs one flag."""
    if args.tau is not None and args.retention_ratio is not None:
        raise ValueError("pass either --tau (paper mode) or --retention-ratio (exact budget), not both")
    overrides: dict[str, Any] = {}
    if args.method == "none":
        overrides["compression.tau"] = None  # clears every budget key (load_config)
    for flag, dotted in FLAG_FIELDS.items():
        if _flag_value(args, flag) is not None:
            overrides[dotted] = _flag_value(args, flag)
    return overrides


def flags_named_by(message: str, args: argparse.Namespace) -> list[str]:
    """The given flags whose config field (`compression.retention_ratio`) a config error message names."""
    return [flag for flag, dotted in FLAG_FIELDS.items() if _flag_value(args, flag) is not None
            and re.search(rf"(?<![\w.]){re.escape(dotted)}(?!\w)", message)]


def load_run_config(args: argparse.Namespace) -> RunConfig:
    """The run config of `--config` with the flags applied, validated (torch-free). A bad value a flag set is
    reported with the flag in front (`--retention-ratio: compression.retention_ratio must be ...`): the user
    typed the flag, not the field."""
    try:
        return load_config(resolve_config_path(args.config), overrides_from_args(args))
    except (ValueError, TypeError) as err:
        flags = flags_named_by(str(err), args)
        if not flags:
            raise
        raise ValueError(f"{', '.join(flags)}: {err}") from err


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


def video_path(args: argparse.Namespace) -> Path:
    """--video, else the demo clip shipped in the package."""
    if args.video is not None:
        return args.video
    if not DEFAULT_VIDEO.is_file():
        raise FileNotFoundError(f"the demo clip {DEFAULT_VIDEO} is missing; pass --video PATH, or recreate it "
                                f"with `python -m llava.demo_clip {DEFAULT_VIDEO}`")
    return DEFAULT_VIDEO


# ---- report -> text ------------------------------------------------------------------------------------------
def printable(text: str) -> str:
    """`text` with every control character except newline and tab written as `\\xNN`, so model output or a file
    name cannot move the cursor, clear the screen or change colours when printed."""
    return CONTROL_CHARS.sub(lambda match: f"\\x{ord(match.group()):02x}", text)


def format_report(report: InferenceReport) -> str:
    """The human-readable report: the answers first, then what compression did and what it cost."""
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
        f"{report.tokens_after} after, {report.retention:.1%} retained ({report.method}{_shape(report)}; {newline})",
        f"tau          {taus}",
        "time (ms)    " + " | ".join(f"{name} {ms:.1f}" for name, ms in report.timings_ms.items())
        + f"  ({new_tokens} new tokens{per_question})",
        f"peak memory  {report.peak_memory_mb:.0f} MB ({memory_kind})",
    ]
    if report.prune_layer is not None:
        lines.append(_in_llm_line(report))
    if report.video_note:
        lines.append(f"video note   {report.video_note}")
    if report.visualization:
        lines.append(f"picture      {report.visualization}")
    return "\n".join(lines)


def _in_llm_line(report: InferenceReport) -> str:
    """Tokens per layer for a method that prunes inside the LLM; its pruning follows each question, so across
    questions only the tower, pooling and pre-LLM compression are shared."""
    return (f"in the LLM   {report.video_tokens_llm_input} video tokens in, {report.video_tokens_after_prune:g} from "
            f"layer {report.prune_layer} of {report.llm_layers} on, {report.video_tokens_layer_mean:.1f} per layer on "
            "average (the FLOPs scale with this); pruned per question, so only the vision stage and the block before "
            "the LLM are shared across questions")


def _shape(report: InferenceReport) -> str:
    shape = report.compression_stats.get("pool_shape")
    return f", pooled to {'x'.join(map(str, shape))}" if shape else ""


def _num(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.4f}"


def _indices(indices: list[int], limit: int = 12) -> str:
    shown = ", ".join(str(i) for i in indices[:limit])
    return f"[{shown}{', ...' if len(indices) > limit else ''}]"


def _fail(err: BaseException, hint: str = "") -> int:
    """One line on stderr for a user error (whitespace collapsed, controls escaped); the exit code 2."""
    message = " ".join(str(err).split())
    print(printable(f"error: {message} {hint + ' ' if hint else ''}{DEBUG_HINT}"), file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    """Parse and validate flags, run, print. Exit 0 on success, 2 on a bad input (video, checkpoint, config), one
    line each. torch and the model stack are imported only once the flags and the config are known good."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        config = load_run_config(args)
        questions = read_questions(args)
        video = video_path(args)
        from llava.runtime import CheckpointError, run_inference
    except (ValueError, TypeError, OSError, ImportError) as err:
        if args.debug:
            raise
        return _fail(err)
    try:
        report = run_inference(config, video, questions, visualize=args.visualize)
    except CheckpointError as err:
        if args.debug:
            raise
        return _fail(err, CHECKPOINT_HINT)
    except (ValueError, TypeError, OSError, ImportError) as err:
        if args.debug:
            raise
        return _fail(err)
    if report.warning:
        print(printable(f"WARNING: {report.warning}"), file=sys.stderr)
    print(json.dumps(report.to_dict()) if args.json else printable(format_report(report)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
