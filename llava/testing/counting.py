"""Count what a call costs a GPU, on any device: dispatched ops (each a kernel launch or more on CUDA) and host
round trips (ops whose result the host must wait for, which stall the launch queue).

Counts are stable where times are not, so tests assert them and the benchmark prints them. A round trip is:
- a scalar read (`.item()`, `int()`, `float()`, `bool()`, `if tensor:`): aten._local_scalar_dense / is_nonzero;
- an op whose output shape depends on tensor values: nonzero, unique, masked_select, bincount (it reads the
  maximum), repeat_interleave without output_size, indexing or index_put with a boolean mask (a hidden nonzero);
- an op that returns a Python value from tensor contents: equal;
- a copy from an accelerator to the CPU (`.cpu()`, `.tolist()`, `.numpy()`), and any copy that names the CPU as
  its target (`.to("cpu", copy=True)`: on a CPU tensor the same call a GPU tensor pays a round trip for).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten

_SYNC_PACKETS = {
    aten._local_scalar_dense, aten.is_nonzero, aten.equal, aten.nonzero, aten.masked_select, aten.bincount,
    aten._unique, aten._unique2, aten.unique_dim, aten.unique_consecutive, aten.unique_dim_consecutive,
}
_MASK_INDEXING = {aten.index, aten.index_put, aten.index_put_, aten._index_put_impl_}


@dataclass
class Counts:
    """ops: dispatched aten ops that run a kernel (views and other metadata-only ops excluded); syncs: host round
    trips among them; by_op: syncs per op name (for reports)."""

    ops: int = 0
    syncs: int = 0
    by_op: Counter = field(default_factory=Counter)


def _forces_sync(func, args: tuple, kwargs: dict) -> bool:
    packet = func.overloadpacket
    if packet in _SYNC_PACKETS:
        return True
    if packet is aten.repeat_interleave:
        return func is aten.repeat_interleave.Tensor or (
            func is aten.repeat_interleave.self_Tensor and kwargs.get("output_size") is None and len(args) < 4)
    if packet in _MASK_INDEXING:
        indices = args[1] if len(args) > 1 else kwargs.get("indices", ())
        return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in indices)
    if packet is aten._to_copy and kwargs.get("device") is not None and torch.device(kwargs["device"]).type == "cpu":
        return True
    if packet in (aten._to_copy, aten.copy_):
        source = args[1] if packet is aten.copy_ else args[0]
        target = args[0].device if packet is aten.copy_ else kwargs.get("device") or source.device
        return source.device.type != "cpu" and torch.device(target).type == "cpu"
    return False


class CountingMode(TorchDispatchMode):
    """`with CountingMode() as mode: ...` then `mode.counts`."""

    def __init__(self) -> None:
        super().__init__()
        self.counts = Counts()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        self.counts.ops += not func.is_view
        if _forces_sync(func, args, kwargs):
            self.counts.syncs += 1
            self.counts.by_op[func.overloadpacket.__name__] += 1
        return func(*args, **kwargs)


def count(fn, *args, **kwargs) -> Counts:
    """Run fn(*args, **kwargs) once and return what it dispatched."""
    with CountingMode() as mode:
        fn(*args, **kwargs)
    return mode.counts
