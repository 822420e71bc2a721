"""The grid runner: cells and commands, loud failure, and a two-cell tiny grid killed and resumed, then reported."""
from __future__ import annotations

import io
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from llava.eval.grid import GridOptions, cells, main, run_grid
from llava.eval.paper import PAPER_YAML, load_paper
from llava.eval.results import CellKey, latest_results_json
from llava.testing.tiny_task import write_tiny_task

REPO = Path(__file__).resolve().parents[1]


def test_paper_grid_cells() -> None:
    paper = load_paper()
    todo = cells(paper, ["7b", "0.5b"], ["paper", "exact"], None, None)
    n7 = len(paper.tasks_for("7b")) * (1 + 2 * 7)  # 100% once, then 7 ratios in two modes
    n05 = len(paper.tasks_for("0.5b")) * (1 + 2 * 5)
    assert len(todo) == n7 + n05 == len(set(todo))
    assert {k.mode for k in todo if k.ratio == 1.0} == {"baseline"}
    assert set(paper.tasks_for("0.5b")) == {"videochatgpt", "mvbench", "mlvu_dev", "videomme", "egoschema_subset"}
    with pytest.raises(ValueError, match="not in the paper grid"):
        cells(paper, ["13b"], ["exact"], None, None)


def test_dry_run_prints_commands_and_runs_nothing(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    paper = load_paper()
    todo = cells(paper, ["0.5b"], ["paper", "exact"], [1.0, 0.1], None)
    out = io.StringIO()
    options = GridOptions(results=tmp_path / "r", pretrained={"0.5b": "/ckpt"})
    assert run_grid(paper, todo, options, dry_run=True, out=out) == 0
    lines = out.getvalue().splitlines()
    assert not (tmp_path / "r").exists()
    assert any("retention_ratio=0.1," in line and "--tasks mvbench" in line for line in lines)
    assert any("llava.eval.calibrate" in line and "--task mvbench" in line for line in lines)
    assert any("method=none" in line for line in lines)
    skipped = [line for line in lines if line.startswith("skip")]
    assert skipped and all("videochatgpt" in line and "OPENAI_API_KEY" in line for line in skipped)


def test_comparison_cells_are_the_printed_rows() -> None:
    """DyCoke at 50 / 35%, PLLaVA and VisionZip at 50 / 35 / 10%, on the tasks of the tables that print each row
    (Table 3, MVBench, has no 50% rows); the 0.5B table prints none of them."""
    paper = load_paper()
    todo = cells(paper, ["7b", "0.5b"], ["dycoke", "pllava", "visionzip"], None, None)
    tables12 = len(paper.tasks_for_tables(["table1", "table2"]))
    assert tables12 == 7 and len(paper.tasks_for("7b")) == 8
    by_method = {m: sorted({(k.ratio, k.task) for k in todo if k.mode == m}) for m in ("dycoke", "pllava", "visionzip")}
    assert len(by_method["dycoke"]) == tables12 + 8  # 50%: Tables 1-2; 35%: Tables 1-3
    assert len(by_method["pllava"]) == len(by_method["visionzip"]) == tables12 + 2 * 8
    assert {r for r, t in by_method["dycoke"]} == {0.5, 0.35}
    assert {r for r, t in by_method["pllava"] if t == "mvbench"} == {0.35, 0.1}
    assert {k.model for k in todo if k.mode != "baseline"} == {"7b"}
    assert len(todo) == len(set(todo)) == 61 + len(paper.tasks_for("7b")) + len(paper.tasks_for("0.5b"))
    ratios_7b = [k.ratio for k in todo if k.model == "7b"]
    assert todo[0].ratio == 1.0 and ratios_7b == sorted(ratios_7b, reverse=True)  # per model, high to low
    with pytest.raises(ValueError, match="unknown modes.*sparsevlm.*fastv"):
        cells(paper, ["7b"], ["sparsevlm"], None, None)


def test_fastv_cells_are_the_printed_rows() -> None:
    """FastV at 50 / 35 / 10% on Tables 1-2 and 35 / 10% on MVBench for 7B; 35 / 10% on Table 7's tasks for
    0.5B, without MLVU at 10% (printed "-")."""
    paper = load_paper()
    todo = [k for k in cells(paper, ["7b", "0.5b"], ["fastv"], None, None) if k.mode == "fastv"]
    tables12 = len(paper.tasks_for_tables(["table1", "table2"]))
    got_7b = {(k.ratio, k.task) for k in todo if k.model == "7b"}
    assert len(got_7b) == tables12 + 2 * 8 and {r for r, _ in got_7b} == {0.5, 0.35, 0.1}
    assert {r for r, t in got_7b if t == "mvbench"} == {0.35, 0.1}
    got_05b = {(k.ratio, k.task) for k in todo if k.model == "0.5b"}
    assert len(got_05b) == 5 + 4 and (0.35, "mlvu_dev") in got_05b and (0.1, "mlvu_dev") not in got_05b


def test_dry_run_lists_comparison_cells_with_their_budgets(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    lmms_model = pytest.importorskip("llava.eval.lmms_model")
    simple_parse_args_string = pytest.importorskip("lmms_eval.utils").simple_parse_args_string
    paper = load_paper()
    todo = cells(paper, ["7b"], ["dycoke", "pllava", "visionzip", "fastv"], [0.5, 0.35, 0.1], ["mvbench", "videomme"])
    out = io.StringIO()
    results = tmp_path / "r"
    assert run_grid(paper, todo, GridOptions(results=results, pretrained={"7b": "/ckpt"}), dry_run=True, out=out) == 0
    lines = out.getvalue().splitlines()
    listed = [line.split()[1:] for line in lines if line.startswith("cell  ")]
    assert listed == [[k.model, k.mode, f"{k.ratio:.2f}", k.task] for k in todo]
    commands = [shlex.split(line[2:]) for line in lines if line.startswith("$ ")]
    assert len(commands) == len(todo) == 4 + 4 * 2 + 3 * 2  # 50%: videomme only; DyCoke has no 10% row
    expected = {("dycoke", r): {"dycoke_k": k, "dycoke_p": 0.8} for r, k in ((0.5, 0.7), (0.35, 0.9))}
    expected |= {
        **{(m, r): {"retention_ratio": r} for m in ("pllava", "visionzip") for r in (0.5, 0.35, 0.1)},
        **{("fastv", r): {"retention_ratio": r, "fastv_layer": 3} for r in (0.5, 0.35, 0.1)}}
    for key, command in zip(todo, commands, strict=True):
        args = simple_parse_args_string(command[command.index("--model_args") + 1])  # as lmms-eval parses them
        assert command[command.index("--output_path") + 1] == str(results / key.model / key.mode
                                                                  / f"{key.ratio:.2f}" / key.task)
        assert args.pop("log_dir") == str(key.path(results) / "samples")
        assert {k: args[k] for k in expected[(key.mode, key.ratio)]} == expected[(key.mode, key.ratio)]
        compression = lmms_model.run_config_from_args(None, args).compression
        assert compression.method == args["method"] == key.mode
        assert compression.dycoke_k == expected[(key.mode, key.ratio)].get("dycoke_k")
        assert compression.dycoke_p == expected[(key.mode, key.ratio)].get("dycoke_p")
        assert compression.fastv_layer == expected[(key.mode, key.ratio)].get("fastv_layer")
        assert compression.retention_ratio == expected[(key.mode, key.ratio)].get("retention_ratio")
        assert compression.prunes_in_llm == (key.mode in ("dycoke", "fastv"))


def test_cli_needs_a_checkpoint_per_model(capsys) -> None:
    assert main(["--models", "7b", "--dry-run"]) == 2
    assert "--pretrained MODEL=PATH" in capsys.readouterr().err


def _tiny_paper(path: Path, task: str) -> Path:
    """The real paper YAML with Video-MME read from the tiny task, and a grid of two cells (100% and 50%)."""
    raw = yaml.safe_load(PAPER_YAML.read_text())
    raw["columns"]["videomme"]["tasks"] = [task]
    raw["grid_tasks"] = {task: {"yields": [task]}}
    raw["grid"] = {"7b": {"ratios": [1.0, 0.5], "tables": ["table2"]}}
    path.write_text(yaml.safe_dump(raw))
    return path


def _grid_command(tiny_dir: Path, task, paper: Path, results: Path, extra: str = "") -> list[str]:
    return ["bash", str(REPO / "scripts" / "reproduce_paper.sh"), "--paper", str(paper), "--pretrained",
            f"7b={tiny_dir}", "--modes", "exact", "--results", str(results), "--frames", "6",
            "--include-path", str(task.include_path),
            "--model-args", f"video_backend=pyav,device=cpu{extra}"]


def _env(task) -> dict[str, str]:
    return {**os.environ, "HF_HOME": str(task.hf_home), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
            "OMP_NUM_THREADS": "1", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}


def _wait_for(condition, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, "the grid ended before the kill point"
        assert time.monotonic() < deadline, "timed out waiting for the kill point"
        time.sleep(0.2)


def test_tiny_grid_killed_resumed_and_reported(tiny_original_dir: Path, tmp_path: Path) -> None:
    task = write_tiny_task(tmp_path / "task", name="tiny_grid", videos=2, questions=2)
    paper = _tiny_paper(tmp_path / "paper.yaml", task.name)
    results = tmp_path / "results"
    first = CellKey("7b", "baseline", 1.0, task.name).path(results)
    second = CellKey("7b", "exact", 0.5, task.name).path(results)
    second_log = second / "samples" / "rank0.jsonl"

    proc = subprocess.Popen(_grid_command(tiny_original_dir, task, paper, results), env=_env(task),
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(lambda: second_log.exists() and second_log.read_text().count("\n") >= 1, proc, 600)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    finished = latest_results_json(first)
    assert finished is not None and latest_results_json(second) is None
    stamp = finished.stat().st_mtime_ns
    answered = second_log.read_text().count("\n")

    done = subprocess.run(_grid_command(tiny_original_dir, task, paper, results), env=_env(task),
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"done  {first}" in done.stdout
    assert latest_results_json(first).stat().st_mtime_ns == stamp, "the finished cell was run again"
    keys = [json.loads(line)["request_key"] for line in second_log.read_text().splitlines()]
    assert len(keys) == len(set(keys)) == task.docs, "answered samples were generated again"
    assert answered >= 1
    report = (results / "report.md").read_text()
    assert "Table 2: Long video, 7B" in report and "ours, exact (ratio)" in report
    assert (results / "report.csv").exists() and (results / "report.png").exists()


def test_failed_cell_stops_the_grid(tiny_original_dir: Path, tmp_path: Path) -> None:
    task = write_tiny_task(tmp_path / "task", name="tiny_fail", videos=1, questions=1)
    paper = _tiny_paper(tmp_path / "paper.yaml", task.name)
    command = _grid_command(tiny_original_dir, task, paper, tmp_path / "results", extra=",not_an_arg=1")
    run = subprocess.run(command, env=_env(task), capture_output=True, text=True, timeout=600)
    assert run.returncode == 1
    assert "FAILED" in run.stdout and "no lmms-eval results JSON" in run.stdout
