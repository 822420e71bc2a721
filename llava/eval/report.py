"""`python -m llava.eval.report results/`: our grid results in the paper's table layout, next to the published
numbers, with deltas; Markdown + CSV + a PNG plot of score against retention.

For every table (1-3 for 7B, 7 for 0.5B) and retention ratio: every row the paper printed at that ratio, each
followed by ours for the same method where we ran it (LLaVA-Scissor: paper mode (calibrated tau) and exact mode
(retention_ratio); a comparison method (DyCoke with its decode stage, PLLaVA, VisionZip, FastV): its grid run at
the budget the paper YAML maps the RR to), each with its delta to the printed row, and the Avg. column computed as
the paper computes it (`llava.eval.paper.table_avg`), ours against our own 100% run. "RR" is the nominal ratio;
"achieved" is the mean retention our model logged over the table's samples (`llava.eval.results.cell_counts`):
for FastV the video tokens after layer K over those at the LLM input, followed, for the methods with a stage
inside the LLM (FastV; DyCoke's decode stage), by the video tokens per layer averaged over the LLM's layers
("layers"), the count decoder FLOPs follow.
"""
from __future__ import annotations

import argparse
import csv
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

from llava.eval.paper import PAPER_YAML, Paper, Table, load_paper, table_avg
from llava.eval.results import SCC_MODES, CellCounts, CellKey, cell_counts, collect, column_value

logger = logging.getLogger(__name__)

OURS = {"baseline": "ours", "paper": "ours, paper mode (tau)", "exact": "ours, exact (ratio)"}
# plot lines (SCC's): the row sources each one joins (our 100% run starts both of our lines) and its line style
PLOT_LINES = {"paper": (("published",), "--"), "ours exact": (("baseline", "exact"), "-"),
              "ours tau": (("baseline", "paper"), ":")}


@dataclass
class ReportRow:
    """One line of a table: `source` is "published" (the paper) or one of our modes; `method` is the printed name
    or our label, `method_key` the registered method the row is (`Paper.method_of`); deltas: ours - paper."""

    table: str
    source: str
    method: str
    method_key: str
    ratio: float
    values: dict[str, float | None]
    avg: float | None
    achieved: float | None = None
    layer_mean: float | None = None
    deltas: dict[str, float | None] | None = None
    avg_delta: float | None = None


def _our_values(paper: Paper, table: Table, cells: dict[CellKey, dict], model: str, mode: str,
                ratio: float) -> dict[str, float | None]:
    metrics: dict[str, dict[str, float]] = {}
    for key, found in cells.items():
        if (key.model, key.mode, key.ratio) == (model, mode, ratio):
            for task, values in found.items():
                metrics.setdefault(task, {}).update(values)
    return {col: column_value(paper, paper.columns[col], metrics) for col in table.columns}


def _counts(root: Path, cells: dict[CellKey, dict], model: str, mode: str, ratio: float,
            tasks: list[str]) -> CellCounts | None:
    """The mean over the run's cells of their logged counts (`cell_counts`); None when no cell logged any."""
    parts = [cell_counts(key.path(root)) for key in cells
             if (key.model, key.mode, key.ratio) == (model, mode, ratio) and key.task in tasks]
    parts = [p for p in parts if p is not None]
    if not parts:
        return None
    layers = [p.layer_mean for p in parts if p.layer_mean is not None]
    return CellCounts(sum(p.achieved for p in parts) / len(parts), sum(layers) / len(layers) if layers else None)


def _delta(ours: float | None, published: float | None) -> float | None:
    return None if ours is None or published is None else ours - published


def _our_modes(paper: Paper, method_key: str) -> tuple[str, ...]:
    """Our grid modes that run the same method as a printed row of `method_key`."""
    if method_key == "none":
        return ("baseline",)
    if method_key == "scc":
        return SCC_MODES
    return (method_key,) if method_key in paper.comparisons else ()


def _label(paper: Paper, mode: str, ratio: float) -> str:
    if mode in paper.comparisons:
        return f"ours, {mode} ({paper.comparisons[mode].budget_args(ratio)})"
    return OURS[mode]


def table_rows(paper: Paper, table: Table, root: Path, cells: dict[CellKey, dict]) -> list[ReportRow]:
    """Every printed row, ratios from high to low, each followed by ours for the same method and ratio (where
    run); our SCC rows at a grid ratio the table did not print come after that ratio's printed rows."""
    model = table.model
    tasks = paper.tasks_for(model)
    our_base = _our_values(paper, table, cells, model, "baseline", 1.0)
    printed = [(r, paper.method_of(r)) for r in table.rows]
    ratios = sorted({r.retention for r in table.rows} | set(paper.grid[model]["ratios"]), reverse=True)
    rows: list[ReportRow] = []
    for ratio in ratios:
        at_ratio = [(r, key) for r, key in printed if r.retention == ratio]
        if "scc" not in {key for _, key in at_ratio} and ratio < 1.0:
            at_ratio.append((None, "scc"))  # our SCC rows at a ratio the table did not print
        for published, method_key in at_ratio:
            if published is not None:
                rows.append(ReportRow(table.key, "published", published.method, method_key, ratio,
                                      published.values, published.avg))
            for mode in _our_modes(paper, method_key):
                values = _our_values(paper, table, cells, model, mode, ratio)
                if all(v is None for v in values.values()):
                    continue
                avg = table_avg(table, values, our_base)
                row = ReportRow(table.key, mode, _label(paper, mode, ratio), method_key, ratio, values, avg)
                counts = _counts(root, cells, model, mode, ratio, tasks)
                if counts is not None:
                    row.achieved, row.layer_mean = counts.achieved, counts.layer_mean
                if published is not None:
                    row.deltas = {c: _delta(values[c], published.values[c]) for c in table.columns}
                    row.avg_delta = _delta(avg, published.avg)
                rows.append(row)
    return rows


def _fmt(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.2f}" if signed else f"{value:.2f}"


def markdown(paper: Paper, tables: dict[str, list[ReportRow]], problems: list[str], root: Path) -> str:
    """All tables as Markdown; a delta line (ours - paper) under each of our rows that has a published twin."""
    out = [f"# LLaVA-Scissor: our results against the paper ({root})", ""]
    for key, rows in tables.items():
        table = paper.tables[key]
        avg_label = "Avg.(%)" if table.avg == "ratio" else "Avg."
        labels = [paper.columns[c].label for c in table.columns]
        out += [f"## {table.title}", "", "| Method | RR | achieved | " + " | ".join(labels) + f" | {avg_label} |",
                "|" + "---|" * (len(labels) + 4)]
        for row in rows:
            cells = [_fmt(row.values[c]) for c in table.columns]
            achieved = "-" if row.achieved is None else f"{100 * row.achieved:.1f}%"
            if row.layer_mean is not None:
                achieved += f" (layers {100 * row.layer_mean:.1f}%)"
            out.append(f"| {row.method} | {100 * row.ratio:.0f}% | {achieved} | " + " | ".join(cells)
                       + f" | {_fmt(row.avg)} |")
            if row.deltas is not None:
                deltas = [_fmt(row.deltas[c], signed=True) for c in table.columns]
                out.append("| &nbsp;&nbsp;delta vs paper | | | " + " | ".join(deltas)
                           + f" | {_fmt(row.avg_delta, signed=True)} |")
        out.append("")
    if problems:
        out += ["## Cells not finished (not in the tables)", ""] + [f"- {p}" for p in problems] + [""]
    return "\n".join(out)


def write_csv(path: Path, paper: Paper, tables: dict[str, list[ReportRow]]) -> None:
    """Long format: one line per (table, source, ratio, column), with the paper's value and the delta."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["table", "model", "source", "method", "ratio", "achieved_retention", "layer_mean_retention",
                         "column", "label", "value", "delta_vs_paper"])
        for key, rows in tables.items():
            table = paper.tables[key]
            for row in rows:
                items = [(c, paper.columns[c].label, row.values[c], (row.deltas or {}).get(c))
                         for c in table.columns] + [("avg", "Avg", row.avg, row.avg_delta)]
                for col, label, value, delta in items:
                    writer.writerow([key, table.model, row.source, row.method, row.ratio, _csv(row.achieved),
                                     _csv(row.layer_mean), col, label, _csv(value), _csv(delta)])


def _csv(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def plot(path: Path, paper: Paper, tables: dict[str, list[ReportRow]]) -> None:
    """Score relative to the 100% row (%) against retention, one panel per table, one colour per benchmark:
    the paper dashed, ours solid (exact mode) and dotted (paper mode). Table 3 plots its 20-task mean."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(tables), figsize=(5 * len(tables), 4), squeeze=False)
    for ax, (key, rows) in zip(axes[0], tables.items(), strict=True):
        table = paper.tables[key]
        columns = ["avg"] if table.avg == "mean" else list(table.avg_columns)
        for i, col in enumerate(columns):
            name = "MVBench" if col == "avg" else paper.columns[col].label
            for line, (sources, style) in PLOT_LINES.items():
                points = _relative_points(rows, col, sources)
                if len(points) > 1:
                    ax.plot(*zip(*points, strict=True), style, color=f"C{i % 10}", marker="o", markersize=3,
                            label=f"{name} ({line})")
        ax.set(title=table.title, xlabel="retention (%)", ylabel="score / 100% row (%)")
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _relative_points(rows: list[ReportRow], col: str, sources: tuple[str, ...]) -> list[tuple[float, float]]:
    """(retention %, 100 * value / value at 100%) over the rows of `sources`; [] without a 100% row."""
    picked = [r for r in rows if r.source in sources and r.method_key in ("none", "scc")]
    value = (lambda r: r.avg) if col == "avg" else (lambda r: r.values.get(col))
    base = next((value(r) for r in picked if r.ratio == 1.0), None)
    if not base:
        return []
    return sorted((100 * r.ratio, 100 * value(r) / base) for r in picked if value(r) is not None)


def build_report(root: Path, out_dir: Path, paper_yaml: Path = PAPER_YAML) -> dict[str, Path]:
    """Render every table that has at least one of our cells; returns the written files by kind."""
    paper = load_paper(paper_yaml)
    cells, problems = collect(paper, root)
    for problem in problems:
        logger.warning("%s", problem)
    models = {key.model for key in cells}
    tables = {key: table_rows(paper, t, root, cells) for key, t in paper.tables.items() if t.model in models}
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"markdown": out_dir / "report.md", "csv": out_dir / "report.csv", "plot": out_dir / "report.png"}
    files["markdown"].write_text(markdown(paper, tables, problems, root))
    write_csv(files["csv"], paper, tables)
    plot(files["plot"], paper, tables)
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="grid root: results/<model>/<mode>/<ratio>/<task>/")
    parser.add_argument("--out", type=Path, default=None, help="where report.{md,csv,png} go (default: results)")
    parser.add_argument("--paper", type=Path, default=PAPER_YAML, help="the published numbers (YAML)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    if not args.results.is_dir():
        print(f"error: {args.results} is not a directory of grid results", file=sys.stderr)
        return 2
    files = build_report(args.results, args.out or args.results, args.paper)
    sys.stdout.write(files["markdown"].read_text())
    for kind, path in files.items():
        logger.info("wrote %s: %s", kind, path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
