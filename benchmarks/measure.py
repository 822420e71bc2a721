"""Instruments for the benchmarks: wall time with device sync, time inside a stack of layers, peak memory of a
phase, and a count of dispatched ops and host round trips.

- `timed`: wall time after the device has finished (CUDA work is asynchronous, so the clock syncs before and
  after).
- `LayerClock`: time spent inside a model's repeated layers, per forward call, from hooks on the first and the
  last layer. A benchmark that runs a model with fewer layers than the real one scales exactly that part by the
  layer count and keeps the rest (embeddings, final norm, lm_head, pooling) as measured.
- `PeakMemory`: the peak of a phase above the memory in use when it started. CUDA: max_memory_allocated after
  reset_peak_memory_stats. CPU: the kernel's own high-water mark of resident memory (VmHWM), reset at the start
  of the phase by writing 5 to /proc/self/clear_refs (Linux), so nothing is sampled and no spike is missed; it
  is process-wide, so it includes anything else the process allocates meanwhile (the benchmark runs one thing
  at a time).
- `OpCounter`: a TorchDispatchMode that counts aten ops (each one or more kernel launches on a GPU) and the ones
  that make the host wait for the device (a scalar read, an op whose output shape depends on tensor values, a
  copy to the CPU). Counts are what a GPU user's latency depends on and what any machine can measure. On a CPU
  tensor `.tolist()`, `.cpu()` and `.numpy()` dispatch no op, so count on a GPU to see those.
"""
from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten
CLEAR_REFS = Path("/proc/self/clear_refs")
STATUS = Path("/proc/self/status")
MB = 2**20


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: torch.device, fn: Callable[[], Any]) -> tuple[Any, float]:
    """(fn(), wall ms once the device is done)."""
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return out, (time.perf_counter() - start) * 1000.0


class LayerClock:
    """Milliseconds spent inside `layers` (an nn.ModuleList), one entry per forward pass through the stack."""

    def __init__(self, layers: nn.ModuleList, device: torch.device) -> None:
        self.device = device
        self.spans: list[float] = []
        self._start = 0.0
        self._hooks = [layers[0].register_forward_pre_hook(self._enter), layers[-1].register_forward_hook(self._exit)]

    def _enter(self, module: nn.Module, args: Any) -> None:
        sync(self.device)
        self._start = time.perf_counter()

    def _exit(self, module: nn.Module, args: Any, output: Any) -> None:
        sync(self.device)
        self.spans.append((time.perf_counter() - self._start) * 1000.0)

    def take(self) -> list[float]:
        """The spans recorded since the last take."""
        spans, self.spans = self.spans, []
        return spans

    def remove(self) -> None:
        for hook in self._hooks:
            hook.remove()


def scale_depth(total_ms: float, layers_ms: float, used: int, real: int) -> float:
    """Time at the real depth: the layers' part scaled by real / used layers, the rest as measured."""
    return total_ms + layers_ms * (real / used - 1.0)


def _status_mb(key: str) -> float:
    match = re.search(rf"^{key}:\s+(\d+) kB", STATUS.read_text(), re.MULTILINE)
    if match is None:
        raise RuntimeError(f"/proc/self/status has no {key} line: CPU peak memory needs Linux")
    return int(match.group(1)) / 1024.0


def reset_cpu_peak() -> bool:
    """Reset this process's resident-memory high-water mark (Linux >= 4.0); False where that is not possible."""
    try:
        CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


class PeakMemory:
    """`with PeakMemory(device) as peak: ...` then `peak.mb`: the phase's peak above its starting point (MB).

    `baseline_mb` fixes the starting point instead (e.g. memory after the model loaded, for several phases that
    share it). On CPU without a resettable high-water mark `mb` is None, never a guess.
    """

    def __init__(self, device: torch.device, baseline_mb: float | None = None) -> None:
        self.device = device
        self.baseline_mb = baseline_mb
        self.mb: float | None = None

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            sync(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            current = torch.cuda.memory_allocated(self.device) / MB
        else:
            self._supported = reset_cpu_peak()
            current = _status_mb("VmRSS") if self._supported else 0.0
        self.baseline_mb = current if self.baseline_mb is None else self.baseline_mb
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.device.type == "cuda":
            sync(self.device)
            self.mb = torch.cuda.max_memory_allocated(self.device) / MB - self.baseline_mb
        elif self._supported:
            self.mb = _status_mb("VmHWM") - self.baseline_mb


def current_mb(device: torch.device) -> float:
    """Memory in use now: CUDA allocated, or this process's resident set on CPU."""
    return torch.cuda.memory_allocated(device) / MB if device.type == "cuda" else _status_mb("VmRSS")


# ------------------------------------------------------------------ dispatched ops and host round trips
# Ops after which the host needs a value from the device: scalar reads (.item(), int(), bool(), `if t:`), value
# checks that return a Python bool, and ops whose output shape depends on tensor values.
_SYNC_OPS = {
    aten._local_scalar_dense, aten.is_nonzero, aten.equal, aten.nonzero, aten.masked_select, aten.bincount,
    aten._unique, aten._unique2, aten.unique_dim, aten.unique_consecutive,
}
_INDEXING = {aten.index, aten.index_put, aten.index_put_, aten._index_put_impl_}


@dataclass
class OpCounts:
    """ops: dispatched aten ops; round_trips: those that make the host wait; by_op: round trips per op name."""

    ops: int = 0
    round_trips: int = 0
    by_op: Counter = field(default_factory=Counter)


def forces_round_trip(func: Any, args: tuple, kwargs: dict) -> bool:
    """Whether this aten call makes the host wait for the device (see the module docstring)."""
    packet = func.overloadpacket
    if packet in _SYNC_OPS:
        return True
    if packet is aten.repeat_interleave:  # the output length is read from the repeats unless given
        return kwargs.get("output_size") is None and func is not aten.repeat_interleave.self_int
    if packet in _INDEXING:  # a boolean mask index is a hidden nonzero
        indices = args[1] if len(args) > 1 else kwargs.get("indices", ())
        return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in indices)
    if packet in (aten._to_copy, aten.copy_):  # device -> host copy
        source = args[1] if packet is aten.copy_ else args[0]
        target = args[0].device if packet is aten.copy_ else kwargs.get("device") or source.device
        return source.device.type != "cpu" and torch.device(target).type == "cpu"
    return False


class OpCounter(TorchDispatchMode):
    """`with OpCounter() as counter: ...` then `counter.counts`."""

    def __init__(self) -> None:
        super().__init__()
        self.counts = OpCounts()

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        self.counts.ops += 1
        if forces_round_trip(func, args, kwargs):
            self.counts.round_trips += 1
            self.counts.by_op[func.overloadpacket.__name__] += 1
        return func(*args, **kwargs)


def count_ops(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> OpCounts:
    """What one call fn(*args, **kwargs) dispatched."""
    with OpCounter() as counter:
        fn(*args, **kwargs)
    return counter.counts
