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


def _lmms_results_from_paper(table_key: str, retention: float, methods: tuple[str, ...] = (
        "LLaVA-Scissor", "LLaVA-OneVision"), shift: dict[str, float] | None = None) -> dict:
    """lmms-eval results whose metrics are the paper's printed row (paper units divided back by `scale`), each
    column moved by `shift` (paper units)."""
    table = PAPER.tables[table_key]
    row = next(r for r in table.rows if r.retention == retention and r.method in methods)
    results: dict = {}
    for col in table.columns:
        column = PAPER.columns[col]
        for task in column.tasks:
            value = row.values[col] + (shift or {}).get(col, 0.0)
            results.setdefault(task, {})[f"{column.metric},none"] = value / column.scale
    return results


def _write_table2_cells(root: Path, mode: str, ratio: float, results: dict, tokens: tuple[int, int],
                        record: dict | None = None) -> None:
    """Table 2's four grid cells of one (mode, ratio) from `results`, each with a one-sample compression log
    (tokens in / out, plus the fields of `record`)."""
    for grid_task in ("egoschema_subset", "mlvu_dev", "videomme", "video_mmmu"):
        wanted = {t: results[t] for t in PAPER.grid_tasks[grid_task].yields}
        cell = _write_cell(root, CellKey("7b", mode, ratio, grid_task), wanted)
        (cell / "samples").mkdir()
        (cell / "samples" / "rank0.jsonl").write_text(
            json.dumps({"tokens_in": tokens[0], "tokens_out": tokens[1], **(record or {})}) + "\n")


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


def test_comparison_method_row_beside_its_published_row(tmp_path: Path) -> None:
    """Our DyCoke 35% run (dycoke_k = 0.9: 2,201 of 6,272 tokens) is rendered under the paper's DyCoke 35% row of
    Table 2 with its deltas, its achieved retention, and its Avg. against our own 100% run."""
    root = tmp_path / "results"
    _write_table2_cells(root, "baseline", 1.0, _lmms_results_from_paper("table2", 1.0), (6272, 6272))
    moved = _lmms_results_from_paper("table2", 0.35, ("DyCoke",), shift={"mlvu": 0.5})
    _write_table2_cells(root, "dycoke", 0.35, moved, (6272, 2201))
    files = build_report(root, tmp_path / "report")
    lines = files["markdown"].read_text().splitlines()
    published = next(i for i, line in enumerate(lines) if line.startswith("| DyCoke | 35% |"))
    assert lines[published + 1].startswith("| ours, dycoke (dycoke_k=0.9,dycoke_p=0.8) | 35% | 35.1% | 57.74 | 60.45 |")
    assert lines[published + 2].startswith("| &nbsp;&nbsp;delta vs paper | | | +0.00 | +0.50 | +0.00 | +0.00 |")
    assert any(line.startswith("| FastV | 35% | - |") for line in lines)  # printed; our FastV cells are absent
    assert not any(line.startswith("| ours, fastv") for line in lines)
    rows = list(csv.DictReader(files["csv"].open()))
    ours = {r["column"]: r for r in rows if r["source"] == "dycoke"}
    assert float(ours["mlvu"]["delta_vs_paper"]) == pytest.approx(0.5)
    assert float(ours["egoschema"]["delta_vs_paper"]) == pytest.approx(0.0, abs=1e-9)
    assert float(ours["avg"]["achieved_retention"]) == pytest.approx(2201 / 6272, abs=1e-4)
    table = PAPER.tables["table2"]
    expected_avg = 100 * sum((v + (0.5 if c == "mlvu" else 0.0)) / table.baseline.values[c]
                             for c, v in next(r for r in table.rows if r.method == "DyCoke" and r.retention == 0.35)
                             .values.items()) / 4
    assert float(ours["avg"]["value"]) == pytest.approx(expected_avg, abs=1e-3)


def test_comparisons_map_printed_rows_to_budgets() -> None:
    assert PAPER.comparisons["dycoke"].budget_args(0.5) == "dycoke_k=0.7,dycoke_p=0.8"
    assert PAPER.comparisons["dycoke"].budget_args(0.35) == "dycoke_k=0.9,dycoke_p=0.8"
    assert PAPER.comparisons["fastv"].budget_args(0.35) == "retention_ratio=0.35,fastv_layer=3"
    assert PAPER.comparisons["pllava"].budget_args(0.1) == "retention_ratio=0.1"
    with pytest.raises(ValueError, match="no dycoke_k for RR 0.1"):
        PAPER.comparisons["dycoke"].budget_args(0.1)
    table1 = PAPER.tables["table1"]
    assert {PAPER.method_of(r) for r in table1.rows} == {"none", "scc", "dycoke", "pllava", "visionzip", "fastv"}
    assert sorted(PAPER.comparison_runs("7b", "visionzip")) == [0.1, 0.35, 0.5]
    assert "mvbench" not in PAPER.comparison_runs("7b", "visionzip")[0.5]  # Table 3 prints no 50% rows
    assert PAPER.comparison_runs("0.5b", "dycoke") == {}
    fastv_05b = PAPER.comparison_runs("0.5b", "fastv")
    assert sorted(fastv_05b) == [0.1, 0.35]
    assert "mlvu_dev" in fastv_05b[0.35] and "mlvu_dev" not in fastv_05b[0.1]  # Table 7 prints no MLVU at 10%
    assert len(fastv_05b[0.1]) == len(PAPER.tasks_for("0.5b")) - 1


def test_fastv_row_beside_its_published_row(tmp_path: Path) -> None:
    """Our FastV 10% run (K = 3 of 28 layers: all 6,272 video tokens enter the LLM, 627 survive layer 3) is rendered
    under the paper's FastV 10% row of Table 2 with its deltas, its achieved retention after layer K and the mean
    over layers, (3 x 6,272 + 25 x 627) / 28 = 1,231.8 tokens, 19.6%."""
    root = tmp_path / "results"
    _write_table2_cells(root, "baseline", 1.0, _lmms_results_from_paper("table2", 1.0), (6272, 6272),
                        {"method": "none", "prune_layer": None, "video_tokens_after_prune": 6272,
                         "video_tokens_layer_mean": 6272.0})
    moved = _lmms_results_from_paper("table2", 0.10, ("FastV",), shift={"videomme": -1.0})
    layer_mean = (3 * 6272 + 25 * 627) / 28
    _write_table2_cells(root, "fastv", 0.10, moved, (6272, 6272),
                        {"method": "fastv", "llm_layers": 28, "prune_layer": 3, "video_tokens_llm_input": 6272,
                         "video_tokens_after_prune": 627, "video_tokens_layer_mean": layer_mean})
    files = build_report(root, tmp_path / "report")
    lines = files["markdown"].read_text().splitlines()
    published = next(i for i, line in enumerate(lines) if line.startswith("| FastV | 10% | - | 55.87 |"))
    assert lines[published + 1].startswith(
        "| ours, fastv (retention_ratio=0.1,fastv_layer=3) | 10% | 10.0% (layers 19.6%) | 55.87 | 55.81 | 50.63 |")
    assert lines[published + 2].startswith("| &nbsp;&nbsp;delta vs paper | | | +0.00 | +0.00 | -1.00 | +0.00 |")
    assert any(line.startswith("| ours | 100% | 100.0% |") for line in lines)  # no in-LLM stage: no layer mean
    rows = list(csv.DictReader(files["csv"].open()))
    ours = {r["column"]: r for r in rows if r["source"] == "fastv"}
    assert float(ours["avg"]["achieved_retention"]) == pytest.approx(627 / 6272, abs=1e-4)
    assert float(ours["avg"]["layer_mean_retention"]) == pytest.approx(layer_mean / 6272, abs=1e-4)
    assert float(ours["videomme"]["delta_vs_paper"]) == pytest.approx(-1.0)
