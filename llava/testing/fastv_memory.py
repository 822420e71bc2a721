"""FastV's prefill memory beside the uncompressed model, SCC and an eager-attention FastV (the official style).

One prompt (a short random prompt around a synthetic video of F frames x T tokens, the pooled shape of the
architecture: 32 x 196 = 6,272 video tokens at 0.5B) is prefilled four ways, each by a model of the same random
weights:
- `none`: every video token through every layer (sdpa).
- `scc`: SCC at retention r before the LLM; the prefill sees round(r x N) video tokens.
- `fastv`: our FastV (`llava.model.fastv.fastv_prefill`) at r and layer K: sdpa, the last prompt row's attention at
  layer K-1 recomputed for that one row, so no [L, L] map exists.
- `fastv-eager`, the official-style baseline: the model loaded with `attn_implementation="eager"` and layer K-1's
  attention probabilities [B, H, L, L] requested from that layer, which is how FastV's own code scores (eager layers,
  `output_attentions`). Its selection and everything after it are ours (`keep_rows`, `gather_index`), so it differs
  from `fastv` only in the attention backend and in where the score comes from. It exists here to be measured.
  FastV's code keeps one such map per layer when `output_attentions` is on for the whole model; this baseline keeps
  only layer K-1's, so its peak is a lower bound of that code's.

Two memory measures of the prefill (prompt embedding + the first forward, KV cache for the whole prompt, logits of the
last row), above the memory in use when it starts:
- `PeakMemory` (`llava.testing.instruments`): CUDA max_memory_allocated; CPU the resident high-water mark, in a
  fresh spawned process per (repeat, variant), since a long-lived process's C allocator keeps freed blocks and would
  hide later phases' growth.
- `TensorPeak`: the peak bytes of live tensor storages that ops create, tracked per op by a dispatch mode and freed
  by weak-reference finalizers. It depends on shapes only, so it is the same on every run (the tests use it); scratch
  buffers a kernel allocates inside itself (sdpa's per-thread blocks) are not tensors and are not seen.

Reduced depth: the model has `text_layers` LLM layers (at least K + 1). The layers' activations are transient, so the
measured peak needs no scaling except the KV cache, one slice per layer: the missing layers' share (each caching the
rows that reach layers K and up) is added in its own column, an upper bound since it assumes the peak falls at the
end of the prefill. Times are as measured at the built depth.

The script is benchmarks/bench_fastv_memory.py; the measuring lives here so the spawned workers import it by name.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import gc
import multiprocessing
import statistics
import weakref
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from transformers import DynamicCache

from llava.compression import CompressionConfig
from llava.compression.timing import timed_call
from llava.model.fastv import FastVPrefill, fastv_prefill, gather_index, keep_rows
from llava.model.llm_loop import DecodeState, LayerGroup, check_layer, group_mask, head_logits, run_layers
from llava.model.modeling import LlavaOnevisionVideoModel, pool_frames
from llava.model.packing import PackedInputs
from llava.testing.architectures import ARCHITECTURES, model_config
from llava.testing.instruments import MB, PeakMemory
from llava.testing.results import RESULTS_DIR, Report, machine
from llava.testing.synthetic import prompt_ids, region_video

PROMPT_LENGTH = 40  # prompt ids around the video placeholder (system prompt + a short question)
VARIANTS = ("none", "scc", "fastv", "fastv-eager")
ATTENTION = {"none": "sdpa", "scc": "sdpa", "fastv": "sdpa", "fastv-eager": "eager"}
LABELS = {"none": "100% (none)", "scc": "SCC", "fastv": "FastV (ours, one-row recompute)",
          "fastv-eager": "FastV, eager + attention map (official style)"}
WEIGHT_SEED = 0


@dataclass
class MemoryBenchConfig:
    """What one run measures; every flag's default lives here."""

    arch: str = "0.5b"
    frames: int = 32
    retention: float = 0.1
    fastv_layer: int = 3
    text_layers: int = 4
    repeats: int = 2
    device: str = "cpu"
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.arch not in ARCHITECTURES:
            raise ValueError(f"unknown architecture {self.arch!r}; valid: {sorted(ARCHITECTURES)}")
        if not 0.0 < self.retention <= 1.0:
            raise ValueError(f"retention must be in (0, 1], got {self.retention}")
        if min(self.frames, self.repeats) < 1:
            raise ValueError(f"frames and repeats must be >= 1, got {self.frames}, {self.repeats}")
        check_layer("fastv_layer", self.fastv_layer, self.text_layers)
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise ValueError(f"dtype must be float32, bfloat16 or float16, got {self.dtype!r}")

    def compression(self, variant: str) -> CompressionConfig:
        if variant == "none":
            return CompressionConfig(method="none")
        if variant == "scc":
            return CompressionConfig(method="scc", retention_ratio=self.retention)
        return CompressionConfig(method="fastv", retention_ratio=self.retention, fastv_layer=self.fastv_layer)


# ------------------------------------------------------------------ measures
class TensorPeak(TorchDispatchMode):
    """`with TensorPeak() as peak: ...` then `peak.mb`: the peak of live tensor storages created inside, above zero.

    An op's output storage that none of its inputs holds (not a view, in-place or out= result) is counted once and
    uncounted by a weakref finalizer when it is freed; tensors that existed before the block are not counted, nor are
    their views or their frees.
    """

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._seen: set[int] = set()

    @property
    def mb(self) -> float:
        return self.peak / MB

    def _free(self, key: int, nbytes: int) -> None:
        self._seen.discard(key)
        self.live -= nbytes

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        inputs = {t.untyped_storage().data_ptr() for t in tree_leaves((args, kwargs)) if isinstance(t, Tensor)}
        for tensor in tree_leaves(out):
            if not isinstance(tensor, Tensor):
                continue
            storage = tensor.untyped_storage()
            if storage.data_ptr() in inputs or id(storage) in self._seen:  # a view, in-place or out= result
                continue
            self._seen.add(id(storage))
            self.live += storage.nbytes()
            weakref.finalize(storage, self._free, id(storage), storage.nbytes())
        self.peak = max(self.peak, self.live)
        return out


# ------------------------------------------------------------------ the official-style baseline
class AttentionMap:
    """`with AttentionMap(layer.self_attn) as attention:` keeps the attention probabilities [B, H, q, L] the module
    returns (eager attention returns them; sdpa returns None), as `output_attentions` collects them."""

    def __init__(self, attention: nn.Module) -> None:
        self.attention = attention
        self.weights: Tensor | None = None

    def _keep(self, module: nn.Module, args: Any, output: tuple[Tensor, Tensor | None]) -> None:
        self.weights = output[1]

    def __enter__(self) -> AttentionMap:
        self._hook = self.attention.register_forward_hook(self._keep)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._hook.remove()


def eager_fastv_prefill(lm: nn.Module, embeds: Tensor, key_mask: Tensor, positions: Tensor, video: Tensor,
                        config: CompressionConfig) -> FastVPrefill:
    """FastV scored the way its official code scores: `lm` runs eager attention and layer K-1 hands back its whole
    attention map [B, H, L, L]; the score is the map's last row, mean over heads. Selection, gathering and the upper
    layers are `fastv_prefill`'s. Logits of the last row only [B, 1, V]."""
    k, n_layers = config.fastv_layer, len(lm.model.layers)
    check_layer("fastv_layer", k, n_layers)
    if lm.config._attn_implementation != "eager":
        raise ValueError(f"the official-style FastV reads eager attention maps; this model runs "
                         f"{lm.config._attn_implementation!r}")
    cache = DynamicCache(config=lm.model.config)
    rope = lm.model.rotary_emb(embeds, positions)  # cos, sin: (B, L, Dk)
    mask = group_mask(lm, embeds, key_mask, cache, 0)
    with AttentionMap(lm.model.layers[k - 1].self_attn) as attention:
        hidden = run_layers(lm, embeds, 0, k, mask, rope, positions, cache)  # (B, L, D)
    scores = attention.weights[:, :, -1].float().mean(dim=1)  # (B, L): the last row, mean over heads
    attention.weights = None  # the map lives until the scores are read, as in the official code
    keep, kept = keep_rows(scores, video, key_mask.bool(), config.retention_ratio)
    index, kept_mask = gather_index(keep)  # (B, M), (B, M)
    hidden = hidden.gather(1, index[..., None].expand(-1, -1, hidden.shape[-1]))  # (B, M, D)
    kept_positions = positions.gather(1, index)  # (B, M): original positions
    mask = group_mask(lm, hidden, kept_mask, cache, k)
    hidden = run_layers(lm, hidden, k, n_layers, mask, lm.model.rotary_emb(hidden, kept_positions), kept_positions,
                        cache)  # (B, M, D)
    state = DecodeState(cache, [LayerGroup(0, k, key_mask), LayerGroup(k, n_layers, kept_mask)], positions[:, -1] + 1)
    return FastVPrefill(head_logits(lm, hidden[:, -1:]), state, video.sum(dim=1), kept)


# ------------------------------------------------------------------ one prefill
def build_model(cfg: MemoryBenchConfig, attention: str) -> LlavaOnevisionVideoModel:
    """The architecture's random model (one tower layer: the tower is not run) with `cfg.text_layers` LLM layers and
    the given attention backend; the same weights for every backend."""
    torch.manual_seed(WEIGHT_SEED)
    with torch.device(cfg.device):
        model = LlavaOnevisionVideoModel(model_config(cfg.arch, 1, cfg.text_layers), attn_implementation=attention)
    return model.to(getattr(torch, cfg.dtype)).eval()


def video_features(model: LlavaOnevisionVideoModel, frames: int) -> Tensor:
    """Structured synthetic features [F, T, D] of the model's pooled shape (T from its own pooling), on its device."""
    vision = model.config.vision
    patches = (vision.image_size // vision.patch_size) ** 2
    tokens = pool_frames(torch.zeros(1, patches, 1), model.config.pool_mode, model.config.pool_stride).shape[1]
    features = region_video(frames=frames, grid=round(tokens**0.5), dim=model.config.text.hidden_size)  # (F, T, D)
    return features.to(model.device, model.dtype)


def prefill(model: LlavaOnevisionVideoModel, packed: PackedInputs, variant: str) -> tuple[Tensor, int]:
    """The variant's prefill of `packed` -> (next-token logits [B, V], rows that reach layers K and up)."""
    lm = model.language_model
    if variant in ("fastv", "fastv-eager"):
        run = fastv_prefill if variant == "fastv" else eager_fastv_prefill
        out = run(lm, packed.inputs_embeds, packed.attention_mask, packed.position_ids, packed.video_mask,
                  packed.in_llm)
        return out.logits[:, -1], out.state.groups[-1].key_mask.shape[1]
    out = model.prefill(packed, use_cache=True, logits_to_keep=1)
    return out.logits[:, -1], packed.inputs_embeds.shape[1]


def prompt_prefill(model: LlavaOnevisionVideoModel, ids: Tensor, video: Any, variant: str) -> tuple[Tensor, int]:
    """Prompt embedding and the variant's prefill, the phase every measure covers."""
    return prefill(model, model.embed_prompts(ids[None], [video]), variant)


def measure(cfg: MemoryBenchConfig, variant: str, threads: int) -> dict[str, float]:
    """One variant in this (fresh) process: a warm-up prefill on two frames, then the compression's and the
    prefill's peaks (`PeakMemory`, above the memory in use before each) with the prefill's time, then the prefill
    once more under `TensorPeak`."""
    torch.set_num_threads(threads)
    device = torch.device(cfg.device)
    model = build_model(cfg, ATTENTION[variant])
    features = video_features(model, cfg.frames)  # (F, T, D)
    ids = prompt_ids(1, PROMPT_LENGTH, model.config.text.vocab_size)[0].to(device)
    compression = cfg.compression(variant)
    with torch.inference_mode():
        prompt_prefill(model, ids, model.compress_features(features[:2], compression), variant)  # warm-up
        gc.collect()
        with PeakMemory(device) as compress_peak:
            video = model.compress_features(features, compression)
        with PeakMemory(device) as prefill_peak:
            (_, upper_rows), ms = timed_call(device, lambda: prompt_prefill(model, ids, video, variant))
        gc.collect()
        with TensorPeak() as tensors:
            prompt_prefill(model, ids, video, variant)
    return {"llm tokens": PROMPT_LENGTH - 1 + video.tokens.shape[0], "upper rows": upper_rows,
            "compression MB": compress_peak.mb, "prefill MB": prefill_peak.mb, "tensor MB": tensors.mb,
            "prefill ms": ms}


def measure_all(cfg: MemoryBenchConfig) -> dict[str, dict[str, float]]:
    """Every variant once per repeat, in turn (interleaved), each in a fresh spawned process -> {variant: medians}."""
    context = multiprocessing.get_context("spawn")
    runs: dict[str, list[dict[str, float]]] = {variant: [] for variant in VARIANTS}
    for _ in range(cfg.repeats):
        for variant in VARIANTS:
            with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
                runs[variant].append(pool.submit(measure, cfg, variant, torch.get_num_threads()).result())
    return {variant: {key: median_of([run[key] for run in done]) for key in done[0]} for variant, done in runs.items()}


def median_of(values: list[float | None]) -> float | None:
    return None if any(v is None for v in values) else statistics.median(values)


def missing_kv_mb(cfg: MemoryBenchConfig, rows: float) -> float:
    """KV cache (keys + values) that the layers left out of the built model would hold for `rows` rows: the layers
    left out are upper ones, which cache the rows that reach layers K and up."""
    text = model_config(cfg.arch).text
    per_row = 2 * text.num_key_value_heads * (text.hidden_size // text.num_attention_heads)  # keys + values
    return (real_depth(cfg) - cfg.text_layers) * rows * per_row * getattr(torch, cfg.dtype).itemsize / MB


def real_depth(cfg: MemoryBenchConfig) -> int:
    """The architecture's LLM depth, or the built one where a test builds more layers than it has (tiny)."""
    return max(ARCHITECTURES[cfg.arch].num_hidden_layers, cfg.text_layers)


# ------------------------------------------------------------------ the table
def fmt(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def ratio(value: float | None, full: float | None) -> str:
    return "n/a" if value is None or not full else f"{value / full:.2f}"


def memory_table(cfg: MemoryBenchConfig, medians: dict[str, dict[str, float]]) -> str:
    """One row per variant: token counts, peaks and their ratios to the 100% row, the prefill's time."""
    depth = real_depth(cfg)
    full = medians["none"]
    full_at_depth = None if full["prefill MB"] is None else full["prefill MB"] + missing_kv_mb(cfg, full["upper rows"])
    header = ["variant", "attention", "LLM input tokens", f"rows in layers {cfg.fastv_layer}+",
              "compression peak MB", f"prefill peak MB ({cfg.text_layers} layers)", "ratio to 100%",
              f"+ KV of {depth - cfg.text_layers} missing layers MB", f"prefill peak MB ({depth} layers)",
              "ratio to 100%", "tensor peak MB", "ratio to 100%", f"prefill ms ({cfg.text_layers} layers)"]
    rows = []
    for variant, m in medians.items():
        kv = missing_kv_mb(cfg, m["upper rows"])
        at_depth = None if m["prefill MB"] is None else m["prefill MB"] + kv
        rows.append([LABELS[variant], ATTENTION[variant], f"{m['llm tokens']:.0f}", f"{m['upper rows']:.0f}",
                     fmt(m["compression MB"]), fmt(m["prefill MB"]), ratio(m["prefill MB"], full["prefill MB"]),
                     fmt(kv), fmt(at_depth), ratio(at_depth, full_at_depth), fmt(m["tensor MB"]),
                     ratio(m["tensor MB"], full["tensor MB"]), fmt(m["prefill ms"], 0)])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def run(cfg: MemoryBenchConfig, results_dir: Path | str = RESULTS_DIR,
        echo: Callable[[str], None] | None = None) -> Path:
    """Measure every variant, show the table through `echo` and write it to `results_dir`; returns the file."""
    report = Report(f"FastV prefill memory, {cfg.arch}, {cfg.frames} frames, retention {100 * cfg.retention:g}%, "
                    f"K = {cfg.fastv_layer}", cfg.device, cfg.dtype, echo)
    report.add(f"{cfg.device}: {machine(torch.device(cfg.device))}, {cfg.dtype}, medians of {cfg.repeats} "
               f"interleaved repeats, one fresh process per variant and repeat\n")
    report.add(f"{cfg.arch}: built with {cfg.text_layers}/{real_depth(cfg)} LLM layers; peaks above the "
               f"memory in use when each phase starts (CPU: resident high-water mark; CUDA: max allocated); the "
               f"missing layers' KV cache is added as an upper bound; tensor peak: live tensor storages, from shapes "
               f"only; times at the built depth\n")
    report.add(memory_table(cfg, measure_all(cfg)))
    return report.write(results_dir, f"fastv-memory-{cfg.arch}")


def parse_args(argv: list[str] | None = None) -> tuple[MemoryBenchConfig, Path]:
    """(the run's config, the directory its result file goes to) from command-line flags."""
    defaults = MemoryBenchConfig()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for f in fields(MemoryBenchConfig):
        value = getattr(defaults, f.name)
        parser.add_argument("--" + f.name.replace("_", "-"), type=type(value), default=value)
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR, help="where the table's file goes")
    args = vars(parser.parse_args(argv))
    results_dir = args.pop("results_dir")
    return MemoryBenchConfig(**args), results_dir
