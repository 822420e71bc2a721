"""The paper's published tables as data (`configs/paper/published.yaml`), its Avg. columns, the comparison methods
of its tables (how each printed row's RR becomes a budget of ours) and its Table 5 (FLOPs).

The paper does not say how Avg.(%) is computed; reading the rows back gives: Tables 1, 2 and 7 average the
per-column ratios to the 100% row (Table 1 over AN Acc, AN Score, CI, DO, CU, TU, CO and Next-QA, leaving out
its own "VCG Avg" column), in percent; Table 3 is the plain mean of the 20 MVBench task scores. Columns the paper
leaves blank ("-") are left out of a row's average (Table 7's FastV 10% row averages four ratios).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

PAPER_YAML = Path(__file__).resolve().parents[1] / "configs" / "paper" / "published.yaml"  # ships in the package
AvgKind = Literal["ratio", "mean"]


@dataclass(frozen=True)
class Column:
    """A benchmark column: read from lmms-eval (`tasks` x `metric` x `scale`) or the mean of other columns."""

    key: str
    label: str
    tasks: tuple[str, ...] = ()
    metric: str | None = None
    scale: float = 1.0
    mean_of: tuple[str, ...] = ()


@dataclass(frozen=True)
class Row:
    """One printed row: values by column key (None where the paper prints "-") and the printed Avg."""

    method: str
    retention: float
    values: dict[str, float | None]
    avg: float
    avg_inconsistent: bool = False  # the printed Avg. does not follow from the printed values (a paper slip)


@dataclass(frozen=True)
class Table:
    key: str
    title: str
    model: str
    columns: tuple[str, ...]
    avg: AvgKind
    avg_columns: tuple[str, ...]
    rows: tuple[Row, ...]

    @property
    def baseline(self) -> Row:
        """The 100% row every ratio is taken against."""
        return next(row for row in self.rows if row.retention == 1.0)


@dataclass(frozen=True)
class GridTask:
    """One lmms-eval task (or group) a grid cell runs, and the result tasks it yields."""

    name: str
    yields: tuple[str, ...]
    judge: bool = False


@dataclass(frozen=True)
class Comparison:
    """A comparison method the grid runs, by its registered name (`method`), and its budget per RR:
    `knob=settings[RR]` when `knob` is set (the method's own knob fixes the count), else `retention_ratio=RR`;
    `fixed` knobs (the same at every RR, e.g. FastV's layer) follow the budget in the model_args."""

    method: str
    knob: str | None = None
    settings: dict[float, float] | None = None
    fixed: dict[str, float | int] = field(default_factory=dict)

    def budget_args(self, ratio: float) -> str:
        """The model_args that set this method's budget for a row of retention `ratio`."""
        if self.knob is None:
            budget = f"retention_ratio={ratio}"
        elif ratio not in self.settings:
            raise ValueError(f"{self.method}: no {self.knob} for RR {ratio}; the paper YAML gives "
                             f"{sorted(self.settings)}")
        else:
            budget = f"{self.knob}={self.settings[ratio]}"
        return ",".join([budget, *(f"{knob}={value}" for knob, value in self.fixed.items())])


@dataclass(frozen=True)
class FlopsRow:
    """One printed row of Table 5: LLM-stage TFLOPs (Eq. 9), FLOPs ratio and performance ratio (both in %)."""

    method: str
    retention: float
    tflops: float
    fr: float
    avg: float


@dataclass(frozen=True)
class Paper:
    columns: dict[str, Column]
    tables: dict[str, Table]
    grid_tasks: dict[str, GridTask]
    grid: dict[str, dict]
    methods: dict[str, str]
    comparisons: dict[str, Comparison]
    table5: tuple[FlopsRow, ...]

    def tasks_for(self, model: str) -> list[str]:
        """The grid tasks that feed the tables of `model` ("7b" / "0.5b"), in table order."""
        return self.tasks_for_tables(self.grid[model]["tables"])

    def tasks_for_tables(self, keys: list[str]) -> list[str]:
        """The grid tasks that feed the tables `keys`, in the grid_tasks order."""
        return self.tasks_for_columns([col for key in keys for col in self.tables[key].columns])

    def tasks_for_columns(self, columns: list[str]) -> list[str]:
        """The grid tasks that feed the columns `columns`, in the grid_tasks order."""
        needed = {task for col in columns for task in self.source_tasks(col)}
        return [name for name, task in self.grid_tasks.items() if set(task.yields) & needed]

    def method_of(self, row: Row | FlopsRow) -> str:
        """The registered method a printed row is: "none" for the 100% row, else the YAML's `methods` entry."""
        if row.retention == 1.0:
            return "none"
        if row.method not in self.methods:
            raise ValueError(f"printed method {row.method!r} has no registered name under 'methods' in the paper "
                             f"YAML (it has {sorted(self.methods)})")
        return self.methods[row.method]

    def comparison_runs(self, model: str, method: str) -> dict[float, list[str]]:
        """{RR: grid tasks} where `model`'s tables print a row of comparison `method`: the RRs each table printed,
        each with the tasks of the columns those rows print (Table 3 has no 50% rows, so 50% runs skip MVBench;
        Table 7's FastV 10% row prints no MLVU, so that run skips it)."""
        runs: dict[float, list[str]] = {}
        for key in self.grid[model]["tables"]:
            for row in self.tables[key].rows:
                if row.retention < 1.0 and self.method_of(row) == method:
                    runs.setdefault(row.retention, []).extend(c for c, v in row.values.items() if v is not None)
        return {ratio: self.tasks_for_columns(columns) for ratio, columns in runs.items()}

    def source_tasks(self, column: str) -> list[str]:
        col = self.columns[column]
        if col.mean_of:
            return [task for part in col.mean_of for task in self.source_tasks(part)]
        return list(col.tasks)


def load_paper(path: str | Path = PAPER_YAML) -> Paper:
    """Read and cross-check the paper YAML (every row as long as its table's columns, every column defined)."""
    raw = yaml.safe_load(Path(path).read_text())
    columns = {key: Column(key=key, label=c["label"], tasks=tuple(c.get("tasks", ())), metric=c.get("metric"),
                           scale=float(c.get("scale", 1.0)), mean_of=tuple(c.get("mean_of", ())))
               for key, c in raw["columns"].items()}
    tables = {key: _table(key, t, columns) for key, t in raw["tables"].items()}
    grid_tasks = {name: GridTask(name, tuple(t["yields"]), bool(t.get("judge", False)))
                  for name, t in raw["grid_tasks"].items()}
    comparisons = {name: Comparison(name, c.get("knob"),
                                    None if "settings" not in c else {float(r): v for r, v in c["settings"].items()},
                                    dict(c.get("fixed", {})))
                   for name, c in raw["comparisons"].items()}
    table5 = tuple(FlopsRow(r["method"], float(r["retention"]), float(r["tflops"]), float(r["fr"]), float(r["avg"]))
                   for r in raw["table5"])
    return Paper(columns=columns, tables=tables, grid_tasks=grid_tasks, grid=raw["grid"], methods=raw["methods"],
                 comparisons=comparisons, table5=table5)


def _table(key: str, raw: dict, columns: dict[str, Column]) -> Table:
    cols = tuple(raw["columns"])
    unknown = sorted((set(cols) | set(raw["avg_columns"])) - set(columns))
    if unknown:
        raise ValueError(f"{key}: columns {unknown} are not defined under 'columns' in the paper YAML")
    rows = []
    for r in raw["rows"]:
        if len(r["values"]) != len(cols):
            raise ValueError(f"{key}: row {r['method']} {r['retention']} has {len(r['values'])} values for "
                             f"{len(cols)} columns")
        rows.append(Row(r["method"], float(r["retention"]), dict(zip(cols, r["values"], strict=True)), float(r["avg"]),
                        bool(r.get("avg_inconsistent", False))))
    return Table(key, raw["title"], str(raw["model"]), cols, raw["avg"], tuple(raw["avg_columns"]), tuple(rows))


def table_avg(table: Table, values: dict[str, float | None], baseline: dict[str, float | None]) -> float | None:
    """The paper's Avg. for one row: mean ratio to `baseline` in percent ("ratio") or mean score ("mean").

    Columns missing in the row (or in the baseline, for ratios) are left out; None when nothing is left."""
    if table.avg == "mean":
        parts = [values[c] for c in table.avg_columns if values.get(c) is not None]
    else:
        parts = [100.0 * values[c] / baseline[c] for c in table.avg_columns
                 if values.get(c) is not None and baseline.get(c)]
    return sum(parts) / len(parts) if parts else None
