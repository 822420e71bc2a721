"""The paper's numbers as data, its Avg. columns, and the report against the paper."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from llava.eval.paper import Table, load_paper, table_avg
from llava.eval.report import build_report, main
from llava.eval.results import CellKey, IncompleteCellError, check_cell, column_value

PAPER = load_paper()


def _rounding_bound(table: Table, values: dict, baseline: dict) -> float:
    """How far Avg. can move when every printed input moves by half a unit of its last printed digit (the paper
    computed Avg. from unrounded scores): first-order error propagation, summed over the averaged columns."""
    cols = [c for c in table.avg_columns if values[c] is not None]
    if table.avg == "mean":
        return 0.05 / 2  # MVBench task scores are printed with one decimal
    bound = 0.0
    for c in cols:
        half = 0.005  # two decimals everywhere in Tables 1, 2 and 7
        bound += 100 * (half / baseline[c] + values[c] * half / baseline[c] ** 2)
    return bound / len(cols)


@pytest.mark.parametrize("key", sorted(PAPER.tables))
def test_avg_column_reproduced_from_the_paper_rows(key: str) -> None:
    table = PAPER.tables[key]
    base = table.baseline.values
    printed_half_unit = 0.05 if table.avg == "ratio" else 0.005
    for row in table.rows:
        ours = table_avg(table, row.values, base)
        reproduced = abs(ours - row.avg) <= printed_half_unit + _rounding_bound(table, row.values, base) + 1e-9
        assert reproduced != row.avg_inconsistent, (row.method, row.retention, ours, row.avg)


def test_avg_rule_is_discriminating() -> None:
    """The same check rejects the obvious wrong rule (Table 1 with its VCG Avg column averaged in, raw means)."""
    table = PAPER.tables["table1"]
    wrong = Table(table.key, table.title, table.model, table.columns, "mean", table.avg_columns, table.rows)
    misses = [r for r in table.rows if abs(table_avg(wrong, r.values, table.baseline.values) - r.avg) > 1.0]
    assert len(misses) >= len(table.rows) - 1
    table2 = PAPER.tables["table2"]
    assert table_avg(table2, table2.rows[1].values, table2.baseline.values) == pytest.approx(
        100 * sum(table2.rows[1].values[c] / table2.baseline.values[c] for c in table2.avg_columns) / 4)


def test_blank_columns_are_left_out_of_the_average() -> None:
    table = PAPER.tables["table7"]
    fastv = next(r for r in table.rows if r.method == "FastV" and r.retention == 0.10)
    assert fastv.values["mlvu"] is None
    parts = [100 * fastv.values[c] / table.baseline.values[c] for c in table.avg_columns if fastv.values[c]]
    assert len(parts) == 4
    assert table_avg(table, fastv.values, table.baseline.values) == pytest.approx(sum(parts) / 4)


def test_every_column_reads_a_defined_source() -> None:
    yielded = {t for task in PAPER.grid_tasks.values() for t in task.yields}
    for col in PAPER.columns.values():
        assert col.mean_of or (col.metric and set(col.tasks) <= yielded), col.key
        for part in col.mean_of:
            assert part in PAPER.columns


def _write_cell(root: Path, key: CellKey, results: dict) -> Path:
    """A cell as lmms-eval leaves it: <cell>/<model name>/<date>_results.json."""
    out = key.path(root) / "llava_scissor" / "20250101_000000_results.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"results": results}))
    return key.path(root)


def _lmms_results_from_paper(table_key: str, retention: float) -> dict:
    """lmms-eval results whose metrics are the paper's printed row (paper units divided back by `scale`)."""
    table = PAPER.tables[table_key]
    row = next(r for r in table.rows if r.retention == retention and r.method in ("LLaVA-Scissor",
                                                                                   "LLaVA-OneVision"))
    results: dict = {}
    for col in table.columns:
        column = PAPER.columns[col]
        for task in column.tasks:
            results.setdefault(task, {})[f"{column.metric},none"] = row.values[col] / column.scale
    return results


def test_report_of_the_papers_own_numbers_has_zero_deltas(tmp_path: Path) -> None:
    root = tmp_path / "results"
    by_task: dict[tuple[str, float], dict] = {}
    for ratio, mode in ((1.0, "baseline"), (0.35, "exact"), (0.10, "paper")):
        results = _lmms_results_from_paper("table2", ratio)
        for grid_task in ("egoschema_subset", "mlvu_dev", "videomme", "video_mmmu"):
            wanted = {t: results[t] for t in PAPER.grid_tasks[grid_task].yields}
            cell = _write_cell(root, CellKey("7b", mode, ratio, grid_task), wanted)
            by_task[(grid_task, ratio)] = check_cell(PAPER, cell, grid_task)
            (cell / "samples").mkdir()
            (cell / "samples" / "rank0.jsonl").write_text(
                json.dumps({"tokens_in": 100, "tokens_out": round(100 * ratio)}) + "\n")
    files = build_report(root, tmp_path / "report")
    text = files["markdown"].read_text()
    assert "Table 2: Long video, 7B" in text and "Table 7" not in text
    rows = list(csv.DictReader(files["csv"].open()))
    ours = [r for r in rows if r["table"] == "table2" and r["source"] in ("exact", "paper")]
    assert {r["ratio"] for r in ours} == {"0.35", "0.1"}
    for r in ours:
        assert abs(float(r["delta_vs_paper"])) < 1e-6 if r["column"] != "avg" else abs(
            float(r["delta_vs_paper"])) <= 0.05, r
        assert float(r["achieved_retention"]) == pytest.approx(float(r["ratio"]))
    assert files["plot"].stat().st_size > 1000
    videommmu = column_value(PAPER, PAPER.columns["videommmu"], by_task[("video_mmmu", 0.35)])
    assert videommmu == pytest.approx(41.33)


def test_incomplete_cells_fail_loudly_and_are_listed(tmp_path: Path) -> None:
    root = tmp_path / "results"
    cell = CellKey("0.5b", "exact", 0.1, "mlvu_dev").path(root)
    cell.mkdir(parents=True)
    with pytest.raises(IncompleteCellError, match="no lmms-eval results JSON"):
        check_cell(PAPER, cell, "mlvu_dev")
    _write_cell(root, CellKey("0.5b", "exact", 0.1, "mlvu_dev"), {"mlvu_dev": {"mlvu_percetion_score,none": "N/A"}})
    with pytest.raises(IncompleteCellError, match="mlvu_dev/mlvu_percetion_score"):
        check_cell(PAPER, cell, "mlvu_dev")
    score = {"videomme": {"videomme_perception_score,none": 40}}
    _write_cell(root, CellKey("0.5b", "baseline", 1.0, "videomme"), score)
    files = build_report(root, root)
    text = files["markdown"].read_text()
    assert "Cells not finished" in text and "mlvu_dev" in text


def test_cli_rejects_a_missing_directory(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main([str(tmp_path / "nope")]) == 2
    assert "not a directory" in capsys.readouterr().err
