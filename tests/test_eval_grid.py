"""The grid runner: cells and commands, loud failure, and a two-cell tiny grid killed and resumed, then reported."""
from __future__ import annotations

import io
import json
import os
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
from llava.eval.tiny_task import write_tiny_task

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
