"""The device-synced wall clock every timing in the package reads (compression's `timed=True`, the CLI's stage
times, evaluation logs, benchmarks).

It lives at the bottom of the import graph (torch only) so every layer above can use the same clock. GPU work
is queued: reading `time.perf_counter()` without waiting for the device charges a kernel to whichever later
stage first waits on it. Each read here first waits for every CUDA device (a model spread over several GPUs
by `device_map="auto"` queues work on all of them); on the CPU the wait is a no-op.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import torch

R = TypeVar("R")


def device_sync(device: torch.device | str) -> None:
    """Wait until `device` (every visible CUDA device when it is a CUDA device) has finished its queued work."""
    if torch.device(device).type == "cuda":
        for index in range(torch.cuda.device_count()):
            torch.cuda.synchronize(index)


def synced_now(device: torch.device | str) -> float:
    """`time.perf_counter()` in seconds, read once `device` is idle."""
    device_sync(device)
    return time.perf_counter()


def timed_call(device: torch.device | str, fn: Callable[[], R]) -> tuple[R, float]:
    """(fn(), wall milliseconds from an idle device to the end of fn's device work)."""
    start = synced_now(device)
    out = fn()
    return out, (synced_now(device) - start) * 1000.0
