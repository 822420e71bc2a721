"""Full float32 matmuls for a block of code, whatever the caller set globally.

lmms-eval's `llava_onevision` module sets `torch.backends.cuda.matmul.allow_tf32 = True` at import. TF32 keeps a
10-bit mantissa, so SCC's float32 cosine similarities would then flip edges near tau that float32 keeps. PyTorch
has two APIs for this flag (the legacy `allow_tf32` and the newer `fp32_precision`) and raises when a program
reads one after setting the other, so the caller's API is the one we read and restore.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def ieee_fp32_matmul() -> Iterator[None]:
    """CUDA float32 matmuls without TF32 inside the block; the caller's setting is restored on exit."""
    matmul = torch.backends.cuda.matmul
    try:
        legacy_on = matmul.allow_tf32
    except RuntimeError:  # the caller set the flag through the new API: reading the legacy one is refused
        legacy_on = None
    if legacy_on is None:
        saved = matmul.fp32_precision
        matmul.fp32_precision = "ieee"
        try:
            yield
        finally:
            matmul.fp32_precision = saved
    elif legacy_on:
        matmul.allow_tf32 = False
        try:
            yield
        finally:
            matmul.allow_tf32 = True
    else:
        yield
