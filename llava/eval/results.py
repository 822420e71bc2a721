"""Reading grid cells: `results/<model>/<mode>/<ratio>/<task>/` -> lmms-eval's results JSON -> column values.

`<mode>` is `baseline` (the 100% run), one of SCC's modes (`paper`, `exact`) or a comparison method's registered
name (`dycoke`, `pllava`, `visionzip`, `fastv`; the paper YAML's `comparisons`).

lmms-eval exits 0 even when a task failed, so a cell counts as finished only when its results JSON exists and
holds a number for every metric the paper's columns read from it; `check_cell` raises naming what is missing.
Each cell also holds our model's per-sample compression log (`samples/rank*.jsonl`), from which the achieved
retention of the cell is read (`cell_counts`; for FastV, video tokens after layer K over video tokens at the LLM
input, with the mean over layers beside it).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

from llava.config_types import METHOD_SPECS
from llava.eval.paper import PAPER_YAML, Column, Paper, load_paper

SCC_MODES = ("paper", "exact")  # SCC's modes; the comparison methods' come from the paper YAML
IN_LLM = frozenset(name for name, spec in METHOD_SPECS.items() if spec.stage == "in_llm")  # prune inside the LLM


def run_modes(paper: Paper) -> tuple[str, ...]:
    """Every mode directory a grid can hold: the 100% baseline, SCC's modes, then the comparison methods."""
    return ("baseline", *SCC_MODES, *paper.comparisons)


class IncompleteCellError(RuntimeError):
    """A cell's results JSON is missing or lacks a metric; the message names the cell and what is missing."""


@dataclass(frozen=True)
class CellKey:
    model: str
    mode: str
    ratio: float
    task: str

    def path(self, root: Path) -> Path:
        return root / self.model / self.mode / ratio_dir(self.ratio) / self.task


def ratio_dir(ratio: float) -> str:
    """Directory name of a retention ratio: two decimals ("0.35", "1.00")."""
    return f"{ratio:.2f}"


def latest_results_json(cell: Path) -> Path | None:
    """lmms-eval writes `<output_path>/<model name>/<date>_results.json`; the newest one wins."""
    found = sorted(cell.glob("**/*_results.json"), key=lambda p: p.name)
    return found[-1] if found else None


def required_metrics(paper: Paper, task: str) -> dict[str, set[str]]:
    """{result task: {metric, ...}} that the paper's columns read from grid task `task`."""
    yields = set(paper.grid_tasks[task].yields)
    needed: dict[str, set[str]] = {}
    for col in paper.columns.values():
        for name in set(col.tasks) & yields:
            needed.setdefault(name, set()).add(col.metric)
    return needed


def check_cell(paper: Paper, cell: Path, task: str) -> dict[str, dict[str, float]]:
    """{result task: {metric: value}} of a finished cell; IncompleteCellError when anything is missing."""
    path = latest_results_json(cell)
    if path is None:
        raise IncompleteCellError(f"{cell}: no lmms-eval results JSON (*_results.json); the run did not finish")
    results = json.loads(path.read_text()).get("results", {})
    values: dict[str, dict[str, float]] = {}
    missing = []
    for name, metrics in required_metrics(paper, task).items():
        for metric in sorted(metrics):
            value = results.get(name, {}).get(f"{metric},none")
            if isinstance(value, (int, float)) and math.isfinite(value):
                values.setdefault(name, {})[metric] = float(value)
            else:
                missing.append(f"{name}/{metric} (got {value!r})")
    if missing:
        raise IncompleteCellError(f"{path}: incomplete results, missing or non-numeric: {', '.join(missing)}; "
                                  "delete the cell directory's results JSON and rerun it")
    return values


def check_any_cell(cell: Path) -> dict[str, dict[str, float]]:
    """For tasks the paper YAML does not know: the newest results JSON must exist and every metric it reports
    (`<metric>,none`, stderr aside) must be a number; {task: {metric: value}}."""
    path = latest_results_json(cell)
    if path is None:
        raise IncompleteCellError(f"{cell}: no lmms-eval results JSON (*_results.json); the run did not finish")
    values: dict[str, dict[str, float]] = {}
    bad = []
    for task, metrics in json.loads(path.read_text()).get("results", {}).items():
        for name, value in metrics.items():
            if not name.endswith(",none") or "_stderr" in name:
                continue
            if isinstance(value, (int, float)) and math.isfinite(value):
                values.setdefault(task, {})[name.removesuffix(",none")] = float(value)
            else:
                bad.append(f"{task}/{name} (got {value!r})")
    if bad or not values:
        raise IncompleteCellError(f"{path}: incomplete results: {', '.join(bad) or 'no metrics at all'}")
    return values


def main(argv: list[str] | None = None) -> int:
    """`python -m llava.eval.results CELL [--task T]`: exit 1 (naming what is missing) unless CELL finished."""
    parser = argparse.ArgumentParser(description="Check that an lmms-eval output directory holds full results.")
    parser.add_argument("cell", type=Path)
    parser.add_argument("--task", default=None, help="a grid task of the paper YAML (checks its metrics)")
    parser.add_argument("--paper", type=Path, default=PAPER_YAML)
    args = parser.parse_args(argv)
    paper = load_paper(args.paper)
    try:
        if args.task in paper.grid_tasks:
            values = check_cell(paper, args.cell, args.task)
        else:
            values = check_any_cell(args.cell)
    except IncompleteCellError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(json.dumps(values, indent=1))
    return 0


def column_value(paper: Paper, column: Column, metrics: dict[str, dict[str, float]]) -> float | None:
    """A column's value in the paper's units from {result task: {metric: value}}; None if any part is absent."""
    if column.mean_of:
        parts = [column_value(paper, paper.columns[key], metrics) for key in column.mean_of]
    else:
        parts = [metrics.get(task, {}).get(column.metric) for task in column.tasks]
        parts = [None if v is None else v * column.scale for v in parts]
    if not parts or any(v is None for v in parts):
        return None
    return sum(parts) / len(parts)


@dataclass(frozen=True)
class CellCounts:
    """What a cell's per-sample log says about its token counts, each a mean over the samples as a fraction of
    the video's tokens (`tokens_in`): `achieved`, the retention the row's RR names (tokens_out for a method that
    compresses before the LLM, video_tokens_after_prune for one that prunes inside it, FastV); `layer_mean`,
    video_tokens_layer_mean, where an in-LLM stage ran (FastV; DyCoke with its decode stage), else None."""

    achieved: float
    layer_mean: float | None


def cell_counts(cell: Path) -> CellCounts | None:
    """The token counts of the cell's logged samples (our model's per-sample log), None if none were logged."""
    achieved, layer_mean = [], []
    for log in sorted(cell.glob("samples/rank*.jsonl")):
        for line in log.read_text().splitlines():
            record = json.loads(line)
            kept = record["video_tokens_after_prune"] if record.get("method") in IN_LLM else record["tokens_out"]
            achieved.append(kept / record["tokens_in"])
            if record.get("prune_layer") is not None:
                layer_mean.append(record["video_tokens_layer_mean"] / record["tokens_in"])
    if not achieved:
        return None
    return CellCounts(sum(achieved) / len(achieved), sum(layer_mean) / len(layer_mean) if layer_mean else None)


def collect(paper: Paper, root: Path) -> tuple[dict[CellKey, dict[str, dict[str, float]]], list[str]]:
    """Every cell under `root` -> (metrics of the finished cells, one line per unfinished cell saying why).

    The report renders what is finished and lists the rest; the grid runner is where unfinished cells fail."""
    found: dict[CellKey, dict[str, dict[str, float]]] = {}
    problems: list[str] = []
    for key, cell in _cell_dirs(paper, root):
        try:
            found[key] = check_cell(paper, cell, cell.name)
        except IncompleteCellError as err:
            problems.append(str(err))
    return found, problems


def _cell_dirs(paper: Paper, root: Path) -> list[tuple[CellKey, Path]]:
    """(key, directory) of every cell of the paper's grid present under `root/<model>/<mode>/<ratio>/<task>`."""
    return [(CellKey(model.name, mode, float(ratio.name), cell.name), cell)
            for model in sorted(p for p in root.iterdir() if p.is_dir())
            for mode in run_modes(paper)
            for ratio in sorted((model / mode).glob("*"))
            for cell in sorted(p for p in ratio.iterdir() if p.is_dir() and p.name in paper.grid_tasks)]


if __name__ == "__main__":
    sys.exit(main())
