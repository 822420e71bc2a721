"""Benchmark result files: a Markdown table (or several) stamped with where and how it was measured.

A number in a document is only worth what its provenance says, so every result file opens with a stamp: the
commit (`+dirty` when the working tree had uncommitted changes), the UTC date, the machine (CPU model and cores,
or the CUDA GPU's name), torch's version, the dtype and the exact command line. File names carry the device
kind (`cpu` or the GPU's name, e.g. `nvidia-h100-80gb-hbm3`), so CPU and GPU results of one table sit side by
side: `<benchmark>-<table>-<dtype>-<device kind>.md` (benchmarks/results/README.md lists them).

The library does not print: a `Report` collects what a benchmark shows and hands each piece to `echo` (a
benchmark script passes `print`), then writes it all under its stamp.
"""
from __future__ import annotations

import os
import platform
import re
import shlex
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[2]
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"  # in a checkout; scripts take --results-dir


@dataclass(frozen=True)
class Stamp:
    """Where and how a result was measured; `lines()` is the header of its file."""

    commit: str
    date: str
    machine: str
    torch: str
    dtype: str
    command: str

    def lines(self) -> list[str]:
        return [f"- commit: {self.commit}", f"- date: {self.date}", f"- machine: {self.machine}",
                f"- torch: {self.torch}", f"- dtype: {self.dtype}", f"- command: `{self.command}`"]


def commit(root: Path = REPO_ROOT) -> str:
    """`git rev-parse --short HEAD` of `root`, plus `+dirty` when its tree has uncommitted changes;
    "not a git checkout" where git cannot say (an installed wheel)."""
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
        status = subprocess.run(["git", "-C", str(root), "status", "--porcelain"], capture_output=True, text=True,
                                check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "not a git checkout"
    return head + ("+dirty" if status.strip() else "")


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux)."""
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return names[0] if names else platform.processor() or platform.machine()


def machine(device: torch.device | str) -> str:
    """The GPU's name for a CUDA device, else the CPU's model and core count; torch's thread count either way."""
    device = torch.device(device)
    threads = f"{torch.get_num_threads()} torch threads"
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} ({torch.cuda.device_count()} visible), {threads}"
    return f"{cpu_name()}, {os.cpu_count()} cores, {threads}"


def device_kind(device: torch.device | str) -> str:
    """`cpu`, or the CUDA GPU's name as a file-name slug (`NVIDIA H100 80GB HBM3` -> `nvidia-h100-80gb-hbm3`)."""
    device = torch.device(device)
    if device.type != "cuda":
        return device.type
    return re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name(device).lower()).strip("-")


def stamp(device: torch.device | str, dtype: str, argv: Sequence[str] | None = None) -> Stamp:
    """The stamp of a run on `device` in `dtype`; `argv` defaults to this process's command line."""
    argv = sys.argv if argv is None else argv
    return Stamp(commit=commit(), date=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                 machine=machine(device), torch=torch.__version__, dtype=dtype,
                 command=shlex.join(["python", *argv]))


class Report:
    """What one benchmark run shows, written to `<directory>/<name>-<dtype>-<device kind>.md` under its stamp.

    `add` keeps a piece of text and passes it to `echo` (nothing by default), so a script shows each row as it is
    measured and the file gets the same text; `echo` first gets the title as a `##` heading.
    """

    def __init__(self, title: str, device: torch.device | str, dtype: str,
                 echo: Callable[[str], None] | None = None, argv: Sequence[str] | None = None) -> None:
        self.title = title
        self.device = torch.device(device)
        self.dtype = dtype
        self.stamp = stamp(self.device, dtype, argv)
        self.echo = echo
        self.parts: list[str] = []
        if echo is not None:
            echo(f"\n## {title}\n")

    def add(self, text: str = "") -> None:
        self.parts.append(text)
        if self.echo is not None:
            self.echo(text)

    def path(self, directory: Path | str, name: str) -> Path:
        return Path(directory) / f"{name}-{self.dtype}-{device_kind(self.device)}.md"

    def write(self, directory: Path | str, name: str) -> Path:
        """Write the stamp and everything added so far; returns the file's path."""
        path = self.path(directory, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        body = "\n".join(self.parts).strip("\n")
        path.write_text("\n".join([f"# {self.title}", "", *self.stamp.lines(), "", body, ""]))
        return path
