"""Reading grid cells: `results/<model>/<mode>/<ratio>/<task>/` -> lmms-eval's results JSON -> column values.

lmms-eval exits 0 even when a task failed, so a cell counts as finished only when its results JSON exists and
holds a number for every metric the paper's columns read from it; `check_cell` raises naming what is missing.
Each cell also holds our model's per-sample compression log (`samples/rank*.jsonl`), from which the achieved
retention of the cell is read.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from llava.eval.paper import Column, Paper

MODES = ("baseline", "paper", "exact")


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


def achieved_retention(cell: Path) -> float | None:
    """Mean tokens_out / tokens_in over the cell's logged samples (our model's per-sample log), None if none."""
    ratios = []
    for log in sorted(cell.glob("samples/rank*.jsonl")):
        for line in log.read_text().splitlines():
            record = json.loads(line)
            ratios.append(record["tokens_out"] / record["tokens_in"])
    return sum(ratios) / len(ratios) if ratios else None


def collect(paper: Paper, root: Path) -> tuple[dict[CellKey, dict[str, dict[str, float]]], list[str]]:
    """Every cell under `root` -> (metrics of the finished cells, one line per unfinished cell saying why).

    The report renders what is finished and lists the rest; the grid runner is where unfinished cells fail."""
    found: dict[CellKey, dict[str, dict[str, float]]] = {}
    problems: list[str] = []
    for model in sorted(p.name for p in root.iterdir() if p.is_dir()):
        for mode in MODES:
            for ratio_path in sorted((root / model / mode).glob("*")):
                for cell in sorted(p for p in ratio_path.iterdir() if p.is_dir() and p.name in paper.grid_tasks):
                    try:
                        found[CellKey(model, mode, float(ratio_path.name), cell.name)] = check_cell(
                            paper, cell, cell.name)
                    except IncompleteCellError as err:
                        problems.append(str(err))
    return found, problems
