"""scripts/gpu_check.sh on a CPU: its dry run prints every planned step within the 8-minute budget, each planned
command parses (a renamed flag or a missing test file fails here, not on the GPU), and without CUDA it refuses to
start."""
from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_check.sh"
STEP = re.compile(r"^\[(\d+)/(\d+)\] (\S+) \(budget (\d+) s\): (.+)$")
# Runs a script's own argument parsing on the given argv and stops there (exit 0) instead of measuring.
PARSE_ONLY = """
import argparse, runpy, sys
parse = argparse.ArgumentParser.parse_args
def parse_then_stop(self, args=None, namespace=None):
    parse(self, args, namespace)
    raise SystemExit(0)
argparse.ArgumentParser.parse_args = parse_then_stop
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def _plan() -> tuple[str, list[tuple[str, int, list[str]]]]:
    out = subprocess.run(["bash", str(SCRIPT), "--dry-run"], capture_output=True, text=True, check=True).stdout
    steps = [(m[3], int(m[4]), shlex.split(m[5])) for m in map(STEP.match, out.splitlines()) if m]
    return out, steps


def test_dry_run_prints_every_step_within_eight_minutes() -> None:
    out, steps = _plan()
    assert [name for name, _, _ in steps] == ["tests", "compression-bf16", "pipeline-0.5b-bf16", "pipeline-7b-bf16",
                                             "methods-0.5b-bf16"]
    total = int(re.search(r"at most (\d+) s", out)[1])
    assert sum(budget for _, budget, _ in steps) < total <= 8 * 60
    benchmarks = [argv for _, _, argv in steps if argv[1].startswith("benchmarks/")]
    assert all("--dtype" in argv and argv[argv.index("--dtype") + 1] == "bfloat16" for argv in benchmarks)
    assert {argv[argv.index("--archs") + 1] for argv in benchmarks if "--archs" in argv} == {"0.5b", "7b"}


def test_every_planned_command_parses() -> None:
    _, steps = _plan()
    for name, _, argv in steps:
        assert argv[0] == "python", name
        if argv[1:3] == ["-m", "pytest"]:  # collecting finds every file and marker without running a test
            check = [sys.executable, *argv[1:], "--collect-only"]
        else:
            check = [sys.executable, "-c", PARSE_ONLY, *argv[1:]]
        done = subprocess.run(check, cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{name}: {done.stdout[-2000:]}{done.stderr[-2000:]}"


def test_a_renamed_flag_fails_the_parse_check() -> None:
    check = [sys.executable, "-c", PARSE_ONLY, "benchmarks/bench_compression.py", "--no-such-flag"]
    done = subprocess.run(check, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "unrecognized arguments: --no-such-flag" in done.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal where no CUDA GPU is visible")
def test_without_cuda_it_says_so_and_runs_nothing() -> None:
    done = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 3
    assert "no CUDA GPU visible" in done.stderr and "===" not in done.stdout


def test_unknown_argument_is_refused() -> None:
    done = subprocess.run(["bash", str(SCRIPT), "--fast"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "usage:" in done.stderr
