"""Benchmark result files: the stamp names commit, date, machine, torch, dtype and the exact command; the file name
carries the device kind; what a report shows is what its file holds; the scripts write theirs (tiny settings)."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from llava.testing import results
from llava.testing.results import Report, commit, device_kind, stamp


def test_stamp_has_every_field_and_the_exact_command() -> None:
    argv = ["benchmarks/bench_compression.py", "--long", "--dims", "896", "--note", "two words"]
    s = stamp("cpu", "float32", argv)
    assert s.command == "python benchmarks/bench_compression.py --long --dims 896 --note 'two words'"
    assert s.torch == torch.__version__ and s.dtype == "float32"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", s.date)
    assert re.fullmatch(r"[0-9a-f]{4,}(\+dirty)?", s.commit), s.commit  # the tests run in a git checkout
    assert f"{torch.get_num_threads()} torch threads" in s.machine and "cores" in s.machine
    assert [line.split(":")[0] for line in s.lines()] == [
        "- commit", "- date", "- machine", "- torch", "- dtype", "- command"]


def test_commit_says_dirty_only_for_uncommitted_changes(tmp_path: Path) -> None:
    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "a.txt").write_text("a")
    git("add", "a.txt")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "a")
    clean = commit(tmp_path)
    (tmp_path / "a.txt").write_text("b")
    assert re.fullmatch(r"[0-9a-f]{4,}", clean) and commit(tmp_path) == clean + "+dirty"
    assert commit(tmp_path / "missing") == "not a git checkout"


def test_device_kind_is_a_file_name_slug(monkeypatch: pytest.MonkeyPatch) -> None:
    assert device_kind("cpu") == "cpu"
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 80GB HBM3")
    assert device_kind("cuda") == "nvidia-h100-80gb-hbm3"


def test_report_writes_its_stamp_and_what_it_showed(tmp_path: Path) -> None:
    shown: list[str] = []
    report = Report("Compression speed", "cpu", "bfloat16", echo=shown.append, argv=["benchmarks/b.py", "--x", "1"])
    report.add("first line\n")
    report.add("| a | b |")
    report.add("|---|---|")
    path = report.write(tmp_path / "results", "compression-long")
    assert path == tmp_path / "results" / "compression-long-bfloat16-cpu.md"
    text = path.read_text()
    assert text.startswith("# Compression speed\n\n- commit: ")
    assert "- dtype: bfloat16\n" in text and "- command: `python benchmarks/b.py --x 1`\n" in text
    assert text.endswith("first line\n\n| a | b |\n|---|---|\n")
    assert shown == ["\n## Compression speed\n", "first line\n", "| a | b |", "|---|---|"]


def test_results_live_in_the_checkouts_benchmarks_folder() -> None:
    assert results.RESULTS_DIR == Path(__file__).resolve().parents[1] / "benchmarks" / "results"


def _script(tmp_path: Path, *argv: str) -> str:
    """Run a benchmark script at a tiny setting with its files in tmp_path; its stdout."""
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, *argv, "--results-dir", str(tmp_path)], cwd=root, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_reuse_script_writes_its_table(tmp_path: Path) -> None:
    out = _script(tmp_path, "benchmarks/bench_reuse.py", "--arch", "tiny", "--frames", "2", "--questions", "2",
                  "--repeats", "1", "--max-new-tokens", "2")
    text = (tmp_path / "reuse-tiny-float32-cpu.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| ") and "variant" not in line]
    assert [row.split("|")[1].strip() for row in rows] == ["one question", "2 questions, reuse",
                                                         "2 questions, no reuse"]
    assert rows[0].endswith("| 1.00 |") and "1/2 tower layers" in text
    assert "- command: `python benchmarks/bench_reuse.py --arch tiny" in text and rows[0] in out


def test_compression_script_writes_its_long_table(tmp_path: Path) -> None:
    out = _script(tmp_path, "benchmarks/bench_compression.py", "--long", "--dims", "32", "--frames", "2", "4",
                  "--repeats", "1", "--device", "cpu")
    text = (tmp_path / "compression-long-float32-cpu.md").read_text()
    rows = [line.split("|")[1:-1] for line in text.splitlines() if line.startswith("| 32 ")]
    assert [(cells[1].strip(), cells[2].strip()) for cells in rows] == [
        ("tau 0.9", "2"), ("tau 0.9", "4"), ("r 0.1", "2"), ("r 0.1", "4")]
    assert all(int(cells[-1]) > int(cells[-2]) >= 0 for cells in rows)  # ops dispatched, of which round trips
    assert "--long --dims 32" in text and "| 32 | r 0.1 | 4 |" in out
