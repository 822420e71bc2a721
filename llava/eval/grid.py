"""The paper's grid in one command: one lmms-eval run per (model, mode, ratio, task) cell, resumable.

    python -m llava.eval.grid --pretrained 7b=CKPT_7B --pretrained 0.5b=CKPT_05B [--models 7b] [--modes exact]
        [--ratios 0.35,0.1] [--tasks mvbench] [--results results] [--dry-run]

Cells (from `configs/paper/published.yaml`, sections `grid` and `comparisons`): 7B at 100/50/35/25/20/10/7/5% on
the tasks of Tables 1-3, 0.5B at 100/50/35/10/7/5% on those of Table 7, 32 frames, plus the comparison methods at
the RRs each table printed them, on the columns each printed row fills: DyCoke 50 / 35%, PLLaVA, VisionZip and
FastV 50 / 35 / 10% on Tables 1-2 and 35 / 10% on MVBench (Table 3 prints no 50% rows); FastV 35 / 10% on the 0.5B
tasks of Table 7 (without MLVU at 10%, which the paper leaves blank). Each cell's lmms-eval output goes to
`results/<model>/<mode>/<ratio>/<task>/`, where mode is one of:
- `baseline`: the 100% run (no compression), which serves every mode and method;
- `paper`: SCC in the paper's setting, one tau per row, found by `llava.eval.calibrate` on the task's videos so
  that the mean retention equals the ratio (the calibration is stored in the cell, `calibration.json`);
- `exact`: SCC at our exact budget, `retention_ratio` (every video keeps round(r * F * T) tokens);
- a comparison method's registered name (`dycoke`, `pllava`, `visionzip`, `fastv`): `method=<name>` with the
  budget the paper YAML maps the row's RR to (DyCoke: `dycoke_k` 0.7 / 0.9 and its decode stage, `dycoke_p=0.8`;
  PLLaVA, VisionZip: `retention_ratio`; FastV: `retention_ratio` kept from layer `fastv_layer=3` on).
Resumable: a cell whose results JSON holds every metric the report needs is skipped; a killed cell restarts
and its answered samples come back from the model's per-sample log (`samples/`). lmms-eval exits 0 even when
a task fails, so every cell's results JSON is checked after its run, and a missing or incomplete one stops the
grid with the cell named. Tasks judged by an LLM (ActivityNet-QA, VideoChatGPT) read the judge's settings from
the environment as lmms-eval does (API_TYPE, OPENAI_API_KEY, OPENAI_API_URL, MODEL_VERSION); without a key
their cells are skipped with a note.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from llava.eval.paper import PAPER_YAML, Paper, load_paper
from llava.eval.report import build_report
from llava.eval.results import SCC_MODES, CellKey, IncompleteCellError, check_cell, ratio_dir
from llava.run_config import VideoSection

logger = logging.getLogger(__name__)



@dataclass(frozen=True)
class GridOptions:
    """Everything a cell's commands depend on besides the cell itself."""

    results: Path
    pretrained: dict[str, str]
    frames: int = VideoSection.frames  # the run config's default, as the paper's 32 x 196 tokens
    batch_size: int = 1
    calibration_sample: int | None = 200
    calibration_tolerance: float = 0.005
    epsilon: float | None = None
    include_path: str | None = None
    limit: int | None = None
    launcher: tuple[str, ...] = ()
    model_args: str = ""
    python: str = sys.executable


def modes_of(paper: Paper) -> tuple[str, ...]:
    """Every mode a cell can run in besides the 100% baseline: SCC's, then the comparison methods'."""
    return SCC_MODES + tuple(paper.comparisons)


def cells(paper: Paper, models: list[str], modes: list[str], ratios: list[float] | None,
          tasks: list[str] | None) -> list[CellKey]:
    """The grid's cells in run order: per model the 100% baseline first, then ratios from high to low, at each
    ratio the modes in the order given (a comparison method only at the RRs and on the tasks of the tables that
    print it)."""
    unknown = sorted(set(modes) - set(modes_of(paper)))
    if unknown:
        raise ValueError(f"unknown modes {unknown}; choose from {list(modes_of(paper))}")
    out = []
    for model in models:
        if model not in paper.grid:
            raise ValueError(f"model {model!r} is not in the paper grid; choose from {sorted(paper.grid)}")
        model_ratios = set(paper.grid[model]["ratios"])
        model_ratios |= {r for m in modes if m in paper.comparisons for r in paper.comparison_runs(model, m)}
        for ratio in sorted(model_ratios, reverse=True):
            if ratios is not None and ratio not in ratios:
                continue
            for mode in ("baseline",) if ratio == 1.0 else modes:
                out.extend(CellKey(model, mode, ratio, task) for task in _mode_tasks(paper, model, mode, ratio)
                           if tasks is None or task in tasks)
    return out


def _mode_tasks(paper: Paper, model: str, mode: str, ratio: float) -> list[str]:
    if mode in paper.comparisons:
        return paper.comparison_runs(model, mode).get(ratio, [])
    return paper.tasks_for(model) if ratio in paper.grid[model]["ratios"] else []


def judge_missing(paper: Paper, task: str) -> str | None:
    """Why an LLM-judged task cannot be scored here (None when it can)."""
    if not paper.grid_tasks[task].judge:
        return None
    if os.environ.get("API_TYPE", "openai") == "openai" and not os.environ.get("OPENAI_API_KEY"):
        return (f"{task} is scored by an LLM judge: set OPENAI_API_KEY (and MODEL_VERSION / OPENAI_API_URL as "
                "lmms-eval reads them) to run it")
    if "HF_HOME" not in os.environ:
        return f"{task}'s lmms-eval utils read HF_HOME at import: export HF_HOME"
    return None


def budget_args(paper: Paper, key: CellKey, tau: float | None, options: GridOptions) -> str:
    """The model_args that set the cell's compression."""
    if key.mode == "baseline":
        return "method=none"
    if key.mode in paper.comparisons:
        return f"method={key.mode},{paper.comparisons[key.mode].budget_args(key.ratio)}"
    if key.mode == "exact":
        return f"retention_ratio={key.ratio}"
    epsilon = f",epsilon={options.epsilon}" if options.epsilon is not None else ""
    return f"tau={'<calibrated>' if tau is None else repr(tau)}{epsilon}"


def lmms_eval_command(paper: Paper, key: CellKey, tau: float | None, options: GridOptions) -> list[str]:
    cell = key.path(options.results)
    model_args = (f"pretrained={options.pretrained[key.model]},{budget_args(paper, key, tau, options)},"
                  f"max_frames_num={options.frames},log_dir={cell / 'samples'}")
    if options.model_args:
        model_args += f",{options.model_args}"
    command = [*(options.launcher or (options.python,)), "-m", "lmms_eval", "--model", "llava_scissor",
               "--model_args", model_args, "--tasks", key.task, "--batch_size", str(options.batch_size),
               "--output_path", str(cell), "--log_samples"]
    if options.include_path:
        command += ["--include_path", options.include_path]
    if options.limit is not None:
        command += ["--limit", str(options.limit)]
    return command


def calibrate_command(model: str, task: str, ratios: list[float], options: GridOptions, out: Path) -> list[str]:
    command = [options.python, "-m", "llava.eval.calibrate", "--pretrained", options.pretrained[model],
               "--task", task, "--target", ",".join(str(r) for r in ratios), "--frames", str(options.frames),
               "--tolerance", str(options.calibration_tolerance), "--out", str(out),
               "--cache-dir", str(options.results / model / "features")]
    if options.calibration_sample is not None:
        command += ["--sample", str(options.calibration_sample)]
    if options.epsilon is not None:
        command += ["--epsilon", str(options.epsilon)]
    if options.include_path:
        command += ["--include-path", options.include_path]
    return command


def calibrated_tau(key: CellKey, todo: list[CellKey], options: GridOptions, dry_run: bool,
                   out: TextIO) -> float | None:
    """The cell's tau: from its calibration.json, else one calibration run for every paper-mode ratio of this
    (model, task) still without one (one vision pass for all of them)."""
    stored = key.path(options.results) / "calibration.json"
    if not stored.exists():
        pending = sorted({k.ratio for k in todo if (k.model, k.task, k.mode) == (key.model, key.task, "paper")
                          and not (k.path(options.results) / "calibration.json").exists()}, reverse=True)
        found = options.results / key.model / "calibration" / f"{key.task}.json"
        command = calibrate_command(key.model, key.task, pending, options, found)
        out.write("$ " + shlex.join(command) + "\n")
        if dry_run:
            return None
        subprocess.run(command, check=True)
        for result in json.loads(found.read_text()):
            cell = CellKey(key.model, "paper", result["target"], key.task).path(options.results)
            cell.mkdir(parents=True, exist_ok=True)
            (cell / "calibration.json").write_text(json.dumps(result, indent=1))
    return json.loads(stored.read_text())["tau"]


def run_grid(paper: Paper, todo: list[CellKey], options: GridOptions, dry_run: bool = False,
             out: TextIO = sys.stdout) -> int:
    """Run (or, dry, print) every unfinished cell, saying what happens to each on `out`; 0 when every cell
    ran or was finished, 1 at the first cell whose results are missing or incomplete after its run."""
    for key in todo:
        cell = key.path(options.results)
        try:
            check_cell(paper, cell, key.task)
            out.write(f"done  {cell}\n")
            continue
        except IncompleteCellError:
            pass
        reason = judge_missing(paper, key.task)
        if reason is not None:
            out.write(f"skip  {cell}: {reason}\n")
            continue
        tau = calibrated_tau(key, todo, options, dry_run, out) if key.mode == "paper" else None
        command = lmms_eval_command(paper, key, tau, options)
        out.write(f"cell  {key.model} {key.mode} {ratio_dir(key.ratio)} {key.task}\n$ {shlex.join(command)}\n")
        out.flush()
        if dry_run:
            continue
        cell.mkdir(parents=True, exist_ok=True)
        returncode = subprocess.run(command).returncode
        try:
            check_cell(paper, cell, key.task)
        except IncompleteCellError as err:
            out.write(f"FAILED {cell} (lmms-eval exit code {returncode}): {err}\n")
            return 1
    return 0


def _pretrained(values: list[str]) -> dict[str, str]:
    out = {}
    for value in values:
        model, sep, path = value.partition("=")
        if not sep or not path:
            raise ValueError(f"--pretrained takes MODEL=PATH (e.g. 7b=checkpoints/llava-7b), got {value!r}")
        out[model] = path
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pretrained", action="append", default=[], help="MODEL=PATH, e.g. 7b=CKPT (repeat)")
    parser.add_argument("--models", default=None, help="comma-separated (default: every model given)")
    parser.add_argument("--modes", default=None, help="comma-separated (default: all): paper (SCC, calibrated tau), "
                        "exact (SCC, retention_ratio), and the comparison methods dycoke, pllava, visionzip, fastv")
    parser.add_argument("--ratios", default=None, help="comma-separated subset of the grid's ratios")
    parser.add_argument("--tasks", default=None, help="comma-separated subset of the grid's lmms-eval tasks")
    parser.add_argument("--results", type=Path, default=Path("results"))
    parser.add_argument("--paper", type=Path, default=PAPER_YAML, help="published numbers and the grid (YAML)")
    parser.add_argument("--frames", type=int, default=GridOptions.frames)
    parser.add_argument("--batch-size", type=int, default=GridOptions.batch_size)
    parser.add_argument("--calibration-sample", type=int, default=GridOptions.calibration_sample,
                        help="videos per task used to calibrate tau (0 = all)")
    parser.add_argument("--calibration-tolerance", type=float, default=GridOptions.calibration_tolerance)
    parser.add_argument("--epsilon", type=float, default=None, help="paper mode: approximate components (0.05)")
    parser.add_argument("--include-path", default=None, help="extra lmms-eval task directory")
    parser.add_argument("--limit", type=int, default=None, help="lmms-eval --limit (smoke runs only)")
    parser.add_argument("--launcher", default="", help='e.g. "accelerate launch --num_processes 8" (data parallel)')
    parser.add_argument("--model-args", default="", help="extra llava_scissor model_args, e.g. dtype=float16")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    parser.add_argument("--report", action="store_true", help="after the grid: report.{md,csv,png} in --results")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        paper = load_paper(args.paper)
        pretrained = _pretrained(args.pretrained)
        models = args.models.split(",") if args.models else list(pretrained)
        missing = [m for m in models if m not in pretrained]
        if not models or missing:
            wanted = missing or sorted(paper.grid)
            raise ValueError(f"give a checkpoint for every model: --pretrained MODEL=PATH (missing: {wanted})")
        modes = args.modes.split(",") if args.modes else list(modes_of(paper))
        ratios = [float(r) for r in args.ratios.split(",")] if args.ratios else None
        tasks = args.tasks.split(",") if args.tasks else None
        todo = cells(paper, models, modes, ratios, tasks)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    options = GridOptions(args.results, pretrained, args.frames, args.batch_size,
                          args.calibration_sample or None, args.calibration_tolerance, args.epsilon,
                          args.include_path, args.limit, tuple(shlex.split(args.launcher)), args.model_args)
    status = run_grid(paper, todo, options, args.dry_run)
    if status == 0 and args.report and not args.dry_run:
        files = build_report(args.results, args.results, args.paper)
        sys.stdout.write(files["markdown"].read_text())
    return status


if __name__ == "__main__":
    sys.exit(main())
