"""Instruments for the benchmarks and their tests: time inside a span of modules, peak memory of a phase, FLOPs.

Every clock here is the package's one device-synced clock, `llava.compression.timing` (`timed_call` for a call's
wall time): CUDA work is asynchronous, so each read waits for the device first.

- `SpanClock`: time from entering one module to leaving another, per forward pass, from hooks (e.g. the vision
  tower's embeddings to its encoder). `LayerClock` is the span of a model's repeated layers: a benchmark that
  runs a model with fewer layers than the real one scales exactly that part by the layer count (`scale_depth`)
  and keeps the rest (embeddings, final norm, lm_head, pooling) as measured.
- `PeakMemory`: the peak of a phase above the memory in use when it started. CUDA: max_memory_allocated after
  reset_peak_memory_stats. CPU: the kernel's own high-water mark of resident memory (VmHWM), reset at the start
  of the phase by writing 5 to /proc/self/clear_refs (Linux), so nothing is sampled and no spike is missed; it
  is process-wide, so it includes anything else the process allocates meanwhile (the benchmark runs one thing
  at a time).
- `counted_flops`: floating-point operations of a call and the part inside a stack of layers, by torch's
  `FlopCounterMode` (matmuls and attention, from shapes, so the same on every device). Compression's share of
  the prefill in FLOPs is the share of time a machine would show that ran both stages' matmuls equally fast
  and everything else for free.
- Ops and host round trips per call are counted by `llava.testing.counting`.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from llava.compression.timing import device_sync, synced_now

CLEAR_REFS = Path("/proc/self/clear_refs")
STATUS = Path("/proc/self/status")
MB = 2**20


class SpanClock:
    """Milliseconds from entering `first` to leaving `last` (modules run in that order), one entry per pass."""

    def __init__(self, first: nn.Module, last: nn.Module, device: torch.device) -> None:
        self.device = device
        self.spans: list[float] = []
        self._start = 0.0
        self._hooks = [first.register_forward_pre_hook(self._enter), last.register_forward_hook(self._exit)]

    def _enter(self, module: nn.Module, args: Any) -> None:
        self._start = synced_now(self.device)

    def _exit(self, module: nn.Module, args: Any, output: Any) -> None:
        self.spans.append((synced_now(self.device) - self._start) * 1000.0)

    def take(self) -> list[float]:
        """The spans recorded since the last take."""
        spans, self.spans = self.spans, []
        return spans

    def remove(self) -> None:
        for hook in self._hooks:
            hook.remove()


class LayerClock(SpanClock):
    """Milliseconds spent inside `layers` (an nn.ModuleList), one entry per forward pass through the stack."""

    def __init__(self, layers: nn.ModuleList, device: torch.device) -> None:
        super().__init__(layers[0], layers[-1], device)


def scale_depth(total_ms: float, layers_ms: float, used: int, real: int) -> float:
    """Time at the real depth: the layers' part scaled by real / used layers, the rest as measured."""
    return total_ms + layers_ms * (real / used - 1.0)


def _cpu_attention_flops(query: torch.Size, key: torch.Size, value: torch.Size, *args: Any, **kwargs: Any) -> int:
    """FLOPs of the CPU SDPA kernel, which torch's counter has no formula for (its CUDA kernels have): QK^T and
    the weighted sum over every (query, key) pair, as torch counts its own fused attentions."""
    return sdpa_flop_count(query, key, value)


def counted_flops(fn: Callable[[], Any], layers: nn.ModuleList | None = None) -> tuple[Any, float, float]:
    """(fn(), its FLOPs, the FLOPs spent inside `layers`, from a hook on the first and the last layer; 0 without
    them), so a reduced-depth model's count scales by layer count as its time does (`scale_depth`)."""
    inside: list[float] = []
    cpu_attention = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_attention_flops}
    with FlopCounterMode(display=False, custom_mapping=cpu_attention) as counter:
        hooks = [] if layers is None else [
            layers[0].register_forward_pre_hook(lambda *_: inside.append(-counter.get_total_flops())),
            layers[-1].register_forward_hook(lambda *_: inside.append(counter.get_total_flops()))]
        try:
            out = fn()
        finally:
            for hook in hooks:
                hook.remove()
    return out, float(counter.get_total_flops()), float(sum(inside))


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
            device_sync(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            current = torch.cuda.memory_allocated(self.device) / MB
        else:
            self._supported = reset_cpu_peak()
            current = _status_mb("VmRSS") if self._supported else 0.0
        self.baseline_mb = current if self.baseline_mb is None else self.baseline_mb
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.device.type == "cuda":
            device_sync(self.device)
            self.mb = torch.cuda.max_memory_allocated(self.device) / MB - self.baseline_mb
        elif self._supported:
            self.mb = _status_mb("VmHWM") - self.baseline_mb


def current_mb(device: torch.device) -> float:
    """Memory in use now: CUDA allocated, or this process's resident set on CPU."""
    return torch.cuda.memory_allocated(device) / MB if device.type == "cuda" else _status_mb("VmRSS")
