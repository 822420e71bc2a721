"""`compress(features, config)`: the one call the model makes, dispatching by method name.

Methods register by exact name in `COMPRESSORS`; the config validates names against the same tuple, so an
unknown method fails at config time with the list of valid ones.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor

from .dycoke import dycoke_mask, keep_for_target, keep_per_frame
from .evs import evs_mask
from .merge import merge_into_kept
from .pllava import pllava
from .scc import SCCOutput, scc_ratio, scc_tau
from .selectors import l2norm_indices, random_indices, uniform_indices
from .timing import synced_now
from .types import METHOD_SPECS, METHODS, CompressionConfig, CompressionResult, CompressionStats, VisualExtras
from .vidcom2 import vidcom2_mask
from .visionzip import visionzip

logger = logging.getLogger(__name__)

# (features in the working precision [F, T, D], config, extras) -> tokens [K, D], assignment [F * T] (index of the
# kept token each input token went into; -1 where a method drops the token instead of merging it)
Compressor = Callable[[Tensor, CompressionConfig, "VisualExtras"], SCCOutput]


def _scc(x: Tensor, config: CompressionConfig, extras: VisualExtras) -> SCCOutput:
    F, T, _ = x.shape
    if config.tau is not None:
        return scc_tau(x, config.tau, config.epsilon, config.seed)
    return scc_ratio(x, config.target_tokens(F * T))


def _selector(pick: Callable[[Tensor, int, int], Tensor]) -> Compressor:
    def run(x: Tensor, config: CompressionConfig, extras: VisualExtras) -> SCCOutput:
        F, T, D = x.shape
        flat = x.view(F * T, D)
        kept = flat[pick(flat, config.target_tokens(F * T), config.seed)]  # (K, D)
        tokens, assignment = merge_into_kept(flat, kept)
        return SCCOutput(tokens, assignment, tokens.shape[0], float("nan"), float("nan"))

    return run


def _kept(x: Tensor, mask: Tensor) -> SCCOutput:
    """A dropping method's output from its keep mask [F, T]: the kept tokens in their original order; assignment
    is a kept token's index among them and -1 for a dropped one."""
    F, T, D = x.shape
    flat = mask.view(F * T)
    tokens = x.reshape(F * T, D)[flat]  # (K, D)
    assignment = torch.where(flat, flat.cumsum(0) - 1, -1)  # (F*T,)
    return SCCOutput(tokens, assignment, tokens.shape[0], float("nan"), float("nan"))


def _dycoke(x: Tensor, config: CompressionConfig, extras: VisualExtras) -> SCCOutput:
    F, T, _ = x.shape
    if config.dycoke_k is not None:
        return _kept(x, dycoke_mask(x, keep_per_frame(config.dycoke_k, T)))
    return _kept(x, dycoke_mask(x, keep_for_target(F, T, config.target_tokens(F * T))))


def _evs(x: Tensor, config: CompressionConfig, extras: VisualExtras) -> SCCOutput:
    F, T, _ = x.shape
    return _kept(x, evs_mask(x, config.target_tokens(F * T)))


def _vidcom2(x: Tensor, config: CompressionConfig, extras: VisualExtras) -> SCCOutput:
    F, T, _ = x.shape
    return _kept(x, vidcom2_mask(x, config.retention_ratio, config.target_tokens(F * T)))


def _identity(x: Tensor, config: CompressionConfig, extras: VisualExtras) -> SCCOutput:
    F, T, D = x.shape
    return SCCOutput(x.reshape(F * T, D), torch.arange(F * T, device=x.device), F * T, float("nan"), float("nan"))


COMPRESSORS: dict[str, Compressor] = {
    "scc": _scc,
    "random": _selector(random_indices),
    "uniform": _selector(uniform_indices),
    "l2norm": _selector(l2norm_indices),
    "pllava": pllava,
    "visionzip": visionzip,
    "dycoke": _dycoke,
    "evs": _evs,
    "vidcom2": _vidcom2,
    "fastv": _identity,  # in-LLM: every video token enters the LLM, which prunes at layer K
    "none": _identity,
}
assert tuple(COMPRESSORS) == METHODS, "every method in config.METHODS needs exactly one compressor"


def check_features(features: Tensor) -> None:
    """Raise for inputs SCC cannot give a meaningful answer on, naming the problem."""
    if not isinstance(features, Tensor):
        raise TypeError(f"features must be a torch.Tensor [F, T, D], got {type(features).__name__}")
    if features.dim() != 3:
        raise ValueError(f"features must have shape [frames, tokens_per_frame, dim], got {tuple(features.shape)}")
    if 0 in features.shape:
        raise ValueError(f"features must be non-empty in every dimension, got shape {tuple(features.shape)}")
    if not features.is_floating_point():
        raise TypeError(f"features must be a floating-point tensor, got {features.dtype}")
    extremes = torch.stack(torch.aminmax(features))  # NaN propagates through min/max: one pass finds NaN and inf
    if not bool(torch.isfinite(extremes).all()):  # the one host read of the check
        raise ValueError(
            "features contain NaN or inf; check the vision tower's dtype (fp16 overflow) before compressing"
        )


def compress(features: Tensor, config: CompressionConfig, timed: bool = False,
             extras: VisualExtras | None = None) -> CompressionResult:
    """Compress video features [F, T, D] into tokens [K, D] (same dtype and device) with `config`.

    timed=True synchronises the device before and after to fill `stats.time_ms` (wall time); by default
    nothing waits for the device here, so the call stays asynchronous on GPUs and `time_ms` is None.
    """
    if not isinstance(config, CompressionConfig):
        raise TypeError(f"config must be a CompressionConfig, got {type(config).__name__}")
    check_features(features)
    extras = extras if extras is not None else VisualExtras()
    extras.require(config.method, METHOD_SPECS[config.method])
    F, T, _ = features.shape
    start = synced_now(features.device) if timed else None
    x = features.float() if config.precision == "float32" else features  # the working precision
    with torch.autocast(device_type=features.device.type, enabled=False), _ieee_float32_matmuls():
        out = COMPRESSORS[config.method](x, config, extras)
    tokens = out.tokens.to(features.dtype)
    scc = config.method == "scc"
    stats = CompressionStats(
        method=config.method,
        tokens_in=F * T,
        tokens_spatial=out.tokens_spatial if scc else None,
        tokens_out=tokens.shape[0],
        tau_spatial=out.tau_spatial if scc else None,
        tau_temporal=out.tau_temporal if scc else None,
        time_ms=(synced_now(features.device) - start) * 1000.0 if start is not None else None,
        pool_shape=out.pool_shape,
    )
    logger.debug("compressed %d -> %d tokens (%s ms)", stats.tokens_in, stats.tokens_out, stats.time_ms)
    return CompressionResult(tokens=tokens, assignment=out.assignment.view(F, T), stats=stats)


@contextmanager
def _ieee_float32_matmuls() -> Iterator[None]:
    """float32 similarities must not silently run in TF32 (10-bit mantissa: it flips near-threshold edges);
    lmms-eval turns TF32 on at import. Uses the per-backend `fp32_precision` setting, which reads back correctly
    whether the caller set TF32 through it or through the legacy `allow_tf32` flag, and restores it after."""
    matmul = torch.backends.cuda.matmul
    saved = matmul.fp32_precision
    matmul.fp32_precision = "ieee"
    try:
        yield
    finally:
        matmul.fp32_precision = saved
