"""Every compression method side by side at the real 0.5B / 7B shapes, and the paper's Table 5 reproduced: the
`methods` and `table5` sections of benchmarks/bench_pipeline.py (`llava.testing.pipeline_bench` has the others).

methods: every registered method (`METHOD_SPECS`; `none` is the 100% row) at each of `method_retentions` (50 / 35
/ 10%), DyCoke also with its decode stage (`TWO_STAGE`, P = 0.8 as the grid runs it), per architecture, one table.
All cells of a bench run in turn within each repeat (medians over repeats), so machine noise hits them alike. Per
cell: video tokens at the LLM input, from the prune layer K on and per layer (mean), and the LLM's input length;
vision (tower, projector, pooling and the extras the method needs: PLLaVA's unpooled grid, VisionZip's tower
attention and keys), compression, prefill and per-token decode through the model's own generation
(`generate_from_embeddings`, which runs FastV's and DyCoke's own loop), time to first token (decode + preprocess +
vision + compression + prefill), TTFT speed-up against 100%, peak memory of compression and of the LLM (+ the KV
cache of the layers a reduced-depth model leaves out), and the FLOPs of compression and of the prefill, counted
by torch's FlopCounterMode in a first untimed pass (which also warms up). Depth is reduced and scaled to the real
one (`DepthSplit`): the pre-LLM methods on `text_layers` layers scaled by layer count as in the stages table; the
methods that prune inside the LLM (FastV; two-stage DyCoke) on a second model of K + 1 layers (K =
`in_llm_layer`), whose first K layers stand for themselves and whose last one, scaled by (real - K), for the
layers from K on. A budget a method cannot reach (DyCoke keeps at least 28.1% at 32 frames) shows "-" and the
method's own reason instead of numbers.

table5: the paper's Eq. 9 (`llava.eval.flops`) at the 7B's shape (28 layers, d = 3584, c = 18944, R = 100) for
every printed row of Table 5 and every method at `method_retentions`, from the token count the method actually
returns on 32 x 196 x 3584 features, next to the printed TFLOPs and FLOPs ratio. Budgets as the paper YAML maps
them (DyCoke by dycoke_k 0.7 / 0.9, the rest by retention_ratio). FastV prunes inside the LLM: its FLOPs are
Eq. 9's layer term summed with layers 0..K-1 at all 6,272 tokens and the rest at the kept ones (K = 3).

Inputs, for both: structured synthetic features (`llava.testing.synthetic.region_video`) built on the unpooled
grid (27 x 27 at 384 px) and pooled with the model's own pooling, so PLLaVA's grid and the pooled features are
one video. VisionZip's extras are synthetic and shaped as the model gives them: keys = the grid through a fixed
random projection to the tower's head size (similar tokens get similar keys), attention = the softmax over a
frame's patches of the keys' product with a fixed random query; both pooled like the features. Every count here
except SCC's tau mode (not used) is fixed by the budget and the shape, whatever these values are.
"""
from __future__ import annotations

import math
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import torch
from transformers import LogitsProcessorList

from llava.compression import CompressionConfig, compress
from llava.compression.timing import synced_now, timed_call
from llava.compression.types import VisualExtras
from llava.config_types import METHOD_SPECS
from llava.eval.flops import (
    LLMShape,
    implied_tokens,
    layer_flops,
    layered_llm_flops,
    llm_flops,
    pruned_at_layer,
)
from llava.eval.paper import Paper, load_paper
from llava.model.fastv import llm_token_counts
from llava.model.model_config import ModelConfig
from llava.model.modeling import EncodedVideo, pool_frames
from llava.testing.architectures import ARCHITECTURES, model_config
from llava.testing.instruments import PeakMemory, SpanClock, counted_flops
from llava.testing.pipeline_bench import (
    Bench,
    BenchConfig,
    TokenMarks,
    build_bench,
    depth_note,
    fmt,
    md_table,
    median_of,
    missing_kv_mb,
    new_report,
    vision_stages,
)
from llava.testing.results import RESULTS_DIR, Report
from llava.testing.synthetic import region_video, write_clip
from llava.video import load_video

TABLE5_ARCH = "7b"  # Table 5 is the 7B's
TABLE5_FRAMES = 32  # the paper's 32 x 196 = 6,272 tokens
FLOPS_TOLERANCE = 0.1  # TFLOPs: the printed values' last digit
Cell = tuple[str, float]  # (method, retention)
TWO_STAGE = "dycoke+decode"  # the methods section's label for DyCoke with its decode stage (dycoke_p set)
DYCOKE_P = 0.8  # the grid's DyCoke P (configs/paper/published.yaml: the official evaluation's default)


# ------------------------------------------------------------------ inputs
@dataclass
class MethodInputs:
    """Pooled features [F, T, D] and the extras every method may need, from one synthetic video."""

    features: torch.Tensor
    extras: VisualExtras


def synthetic_inputs(config: ModelConfig, frames: int, dim: int, seed: int = 0) -> MethodInputs:
    """Structured features on the unpooled grid [F, P, D], pooled by `config`'s pooling, with synthetic tower
    attention [F, T] and keys [F, T, Dk] (Dk = the tower's head size) pooled the same way (module docstring)."""
    side = config.vision.image_size // config.vision.patch_size
    key_dim = config.vision.hidden_size // config.vision.num_attention_heads
    grid = region_video(frames=frames, grid=side, dim=dim, seed=seed)  # (F, P, D)
    generator = torch.Generator().manual_seed(seed + 1)
    keys = grid @ (torch.randn(dim, key_dim, generator=generator) / math.sqrt(dim))  # (F, P, Dk)
    query = torch.randn(key_dim, generator=generator)  # (Dk,)
    attention = torch.softmax(keys @ query / math.sqrt(key_dim), dim=1)  # (F, P)
    pool = partial(pool_frames, mode=config.pool_mode, stride=config.pool_stride)
    extras = VisualExtras(grid=grid, attention=pool(attention[..., None])[..., 0], keys=pool(keys))  # (F,T), (F,T,Dk)
    return MethodInputs(pool(grid), extras)  # (F, T, D)


def method_cells(retentions: tuple[float, ...]) -> list[Cell]:
    """`none` at 100%, then every other registered method at each retention, in registry order, DyCoke followed
    by its two-stage form (`TWO_STAGE`: its decode stage on)."""
    cells = [("none", 1.0)]
    for method, spec in METHOD_SPECS.items():
        if spec.budget != "none":
            cells += [(method, r) for r in retentions]
        if method == "dycoke":
            cells += [(TWO_STAGE, r) for r in retentions]
    return cells


def ratio_config(method: str, retention: float, layer: int | None = None) -> CompressionConfig:
    """A `retention_ratio` budget for every method but `none`, which keeps every token; `layer` (default the
    config's) is FastV's K and the two-stage DyCoke's L, whose P is `DYCOKE_P`."""
    if method == "none":
        return CompressionConfig(method="none")
    if method == TWO_STAGE:
        return CompressionConfig(method="dycoke", retention_ratio=retention, dycoke_p=DYCOKE_P, dycoke_l=layer)
    if method == "fastv":
        return CompressionConfig(method=method, retention_ratio=retention, fastv_layer=layer)
    return CompressionConfig(method=method, retention_ratio=retention)


def unreachable(error: ValueError) -> str:
    """The reason a method gives for a budget it cannot reach, up to its first ';' (the advice follows)."""
    return str(error).split(";")[0]


# ------------------------------------------------------------------ methods side by side
@dataclass
class DepthSplit:
    """A bench's LLM layers split at `k`: layers 0..k-1 are built as in the real model and kept as measured;
    layers k..built-1 (timed by `clock`) stand for the real model's k..real-1 and are scaled by
    (real - k) / (built - k). k = 0 is plain scaling by layer count."""

    k: int
    built: int
    real: int
    clock: SpanClock

    def scale(self, total: float, upper: float) -> float:
        """A measured total (ms or FLOPs) at the real depth, `upper` of it spent in layers k and up."""
        return total + upper * ((self.real - self.k) / (self.built - self.k) - 1.0)


def depth_split(bench: Bench, k: int) -> DepthSplit:
    layers = bench.model.language_model.model.layers
    return DepthSplit(k, len(layers), bench.spec.num_hidden_layers, SpanClock(layers[k], layers[-1], bench.device))


def bench_groups(cells: list[Cell], cfg: BenchConfig,
                 arch: str) -> tuple[list[tuple[list[Cell], int]], dict[Cell, str]]:
    """([(cells, K)] to measure, one bench each, {cell: reason} for those that cannot be): at the real depth one
    bench for every cell; reduced, the pre-LLM cells on cfg.text_layers layers (K = 0) and the in-LLM ones
    (FastV, two-stage DyCoke) on cfg.in_llm_layer + 1 layers, split at K = cfg.in_llm_layer."""
    if cfg.full_depth:
        return [(cells, 0)], {}
    in_llm = [c for c in cells if ratio_config(*c, layer=cfg.in_llm_layer).prunes_in_llm]
    groups = [([c for c in cells if c not in in_llm], 0)]
    real = ARCHITECTURES[arch].num_hidden_layers
    if cfg.in_llm_layer >= real:
        reason = f"layer {cfg.in_llm_layer} is past the LLM's {real} layers; set --in-llm-layer below {real}"
        return groups, dict.fromkeys(in_llm, reason)
    return groups + [(in_llm, cfg.in_llm_layer)], {}


def llm_pass(bench: Bench, split: DepthSplit, video: EncodedVideo, new_tokens: int) -> dict[str, float]:
    """Prefill and per-token decode through the model's own generation (`generate_from_embeddings`, which runs
    an in-LLM method's own loop), scaled by `split`; with the video tokens per LLM layer."""
    marks = TokenMarks(bench.device)
    start = synced_now(bench.device)
    packed = bench.model.embed_prompts(bench.ids[None], [video])
    extra = {} if packed.in_llm is not None else {"min_new_tokens": new_tokens + 1}
    bench.model.generate_from_embeddings(packed, max_new_tokens=new_tokens + 1, do_sample=False, eos_token_id=None,
                                         pad_token_id=0, logits_processor=LogitsProcessorList([marks]), **extra)
    spans = split.clock.take()
    bench.text_clock.take()
    if len(spans) != len(marks.marks):
        raise RuntimeError(f"{len(spans)} passes through layers {split.k}+ for {len(marks.marks)} tokens")
    decode = bench.model.decode_video_tokens  # (B,): DyCoke's decode stage, else None
    counts = llm_token_counts(video.compression, video.stats.tokens_out, split.real,
                              None if decode is None else float(decode[0]))
    return {"prefill": split.scale((marks.marks[0] - start) * 1000.0, spans[0]),
            "decode/token": split.scale((marks.marks[-1] - marks.marks[0]) * 1000.0, sum(spans[1:])) / new_tokens,
            "llm tokens": float(packed.inputs_embeds.shape[1]), "after K": counts.video_tokens_after_prune,
            "layer mean": counts.video_tokens_layer_mean}


def cell_flops(bench: Bench, split: DepthSplit, config: CompressionConfig, inputs: MethodInputs) -> dict[str, float]:
    """GFLOP of one compression call and of the prefill it feeds (generation to its first token, through the
    model's own path), the latter scaled by `split`; counted once, apart from the timed passes."""
    video, compression, _ = counted_flops(lambda: bench.model.compress_features(inputs.features, config,
                                                                               extras=inputs.extras))
    packed = bench.model.embed_prompts(bench.ids[None], [video])
    layers = bench.model.language_model.model.layers
    _, total, upper = counted_flops(lambda: bench.model.generate_from_embeddings(
        packed, max_new_tokens=1, do_sample=False, eos_token_id=None, pad_token_id=0), layers[split.k:])
    return {"compression GFLOP": compression / 1e9, "prefill GFLOP": split.scale(total, upper) / 1e9}


def first_pass(bench: Bench, split: DepthSplit, inputs: MethodInputs, cells: list[Cell],
               layer: int) -> tuple[dict[Cell, dict], dict[Cell, str]]:
    """FLOPs of every cell (counted, untimed; also the warm-up), and the cells whose budget the method cannot
    reach, with its reason in its own words."""
    flops, skipped = {}, {}
    for cell in cells:
        try:
            flops[cell] = cell_flops(bench, split, ratio_config(*cell, layer=layer), inputs)
        except ValueError as error:
            skipped[cell] = unreachable(error)
    for clock in (bench.tower_span, bench.tower_clock, bench.text_clock, split.clock):
        clock.take()
    return flops, skipped


def cell_pass(bench: Bench, split: DepthSplit, inputs: MethodInputs, config: CompressionConfig,
              new_tokens: int) -> dict[str, float]:
    """Compression then prefill and decode of one cell, timed, each with its peak memory."""
    with PeakMemory(bench.device) as compress_peak:
        video, compress_ms = timed_call(bench.device, lambda: bench.model.compress_features(
            inputs.features, config, extras=inputs.extras))
    with PeakMemory(bench.device) as llm_peak:
        stages = llm_pass(bench, split, video, new_tokens)
    cached = stages["llm tokens"] - video.stats.tokens_out + stages["after K"]  # rows the layers from K on cache
    kv = missing_kv_mb(bench.model, bench.spec, cached)
    return {"video tokens": video.stats.tokens_out, "compression": compress_ms, **stages,
            "compression MB": compress_peak.mb, "LLM MB": None if llm_peak.mb is None else llm_peak.mb + kv}


def methods_pass(bench: Bench, split: DepthSplit, inputs: MethodInputs, cells: list[Cell], cfg: BenchConfig,
                 clip: str) -> dict[Cell, dict[str, float]]:
    """One repeat: decode and preprocess once, vision once per distinct set of extras, then every cell."""
    cpu = torch.device("cpu")
    frames, decode_ms = timed_call(cpu, lambda: load_video(clip, cfg.frames).frames)
    pixels, pre_ms = timed_call(cpu, lambda: bench.processor.preprocess(frames)["pixel_values"])
    configs = {cell: ratio_config(*cell, layer=cfg.in_llm_layer) for cell in cells}
    vision = {}
    for needs in dict.fromkeys(METHOD_SPECS[config.method].needs for config in configs.values()):
        _, times = vision_stages(bench, pixels, cfg.frame_batch_size, needs)
        vision[needs] = times["tower"] + times["proj+pool"]
    out = {}
    for cell, config in configs.items():
        stages = cell_pass(bench, split, inputs, config, cfg.new_tokens)
        stages["vision"] = vision[METHOD_SPECS[config.method].needs]
        stages["TTFT"] = decode_ms + pre_ms + stages["vision"] + stages["compression"] + stages["prefill"]
        out[cell] = stages
    return out


def measure_group(arch: str, cfg: BenchConfig, clip: str, cells: list[Cell],
                  k: int) -> tuple[dict[Cell, dict[str, float]], dict[Cell, str]]:
    """({cell: medians over cfg.repeats passes, FLOPs included}, {unreachable cell: reason}) for `cells` on one
    bench of `arch` (cfg.text_layers LLM layers for K = 0, else K + 1; the real depth with cfg.full_depth)."""
    bench = build_bench(arch, cfg if k == 0 or cfg.full_depth else replace(cfg, text_layers=k + 1))
    split = depth_split(bench, k)
    inputs = synthetic_inputs(bench.model.config, cfg.frames, bench.spec.hidden_size)
    inputs = MethodInputs(inputs.features.to(bench.device, bench.model.dtype), VisualExtras(
        grid=inputs.extras.grid.to(bench.device, bench.model.dtype), attention=inputs.extras.attention.to(bench.device),
        keys=inputs.extras.keys.to(bench.device)))
    with torch.inference_mode():
        flops, skipped = first_pass(bench, split, inputs, cells, cfg.in_llm_layer)
        reachable = [cell for cell in cells if cell not in skipped]
        passes = [methods_pass(bench, split, inputs, reachable, cfg, clip) for _ in range(cfg.repeats)]
    medians = {cell: {k: median_of([p[cell][k] for p in passes]) for k in passes[0][cell]} | flops[cell]
               for cell in reachable}
    for clock in (bench.tower_span, bench.tower_clock, bench.text_clock, split.clock):
        clock.remove()
    return medians, skipped


def run_methods(arch: str, cfg: BenchConfig, clip: str) -> tuple[dict[Cell, dict[str, float]], dict[Cell, str]]:
    """({cell: medians}, {cell not measured: reason}) for `arch`, one bench per `bench_groups` group in turn."""
    groups, skipped = bench_groups(method_cells(cfg.method_retentions), cfg, arch)
    medians: dict[Cell, dict[str, float]] = {}
    for cells, k in groups:
        measured, unreached = measure_group(arch, cfg, clip, cells, k)
        medians |= measured
        skipped |= unreached
    return medians, skipped


def in_llm_note(arch: str, cfg: BenchConfig) -> str:
    """The depth rule of the in-LLM rows (FastV, two-stage DyCoke), in words."""
    k, real = cfg.in_llm_layer, ARCHITECTURES[arch].num_hidden_layers
    return (f"In-LLM rows (fastv, {TWO_STAGE}: DyCoke with its decode stage, P = {DYCOKE_P}) run on a second model "
            f"built with K + 1 = {k + 1} LLM layers (K = {k}: FastV's prune layer, DyCoke's L): layers 0-{k - 1} "
            f"are measured as in the real model, and the time and FLOPs of layer {k} (from K on, on the kept "
            f"tokens) are scaled by ({real} - {k}) / 1 to the real {real} layers; K = the layer they prune from, "
            "video tokens from layer K on = N' (FastV: the kept count; DyCoke: the mean over decode steps of the "
            "video tokens attended from layer L on), per layer = (K x N + (L - K) x N') / L; the KV cache of the "
            "missing layers counts the rows they cache\n")


def methods_table(cells: list[Cell], medians: dict[Cell, dict[str, float]], skipped: dict[Cell, str],
                  layer: int) -> str:
    full = medians[("none", 1.0)]
    rows = []
    for method, retention in cells:
        label = [method, f"{100 * retention:g}%"]
        if (method, retention) in skipped:
            rows.append(label + ["-"] * 17 + [skipped[(method, retention)]])
            continue
        s = medians[(method, retention)]
        in_llm = ratio_config(method, retention, layer).prunes_in_llm
        rows.append(label + [str(int(s["video tokens"])), str(int(s["llm tokens"])), str(layer) if in_llm else "-",
                             fmt(s["after K"], 1), fmt(s["layer mean"], 1)] + [fmt(s[k]) for k in (
            "vision", "compression", "prefill")] + [fmt(s["decode/token"], 1), fmt(s["TTFT"]),
                                                    f"{full['TTFT'] / s['TTFT']:.2f}"] + [
            fmt(s[k]) for k in ("compression MB", "LLM MB")] + [
            fmt(s["compression GFLOP"], 1), fmt(s["prefill GFLOP"]),
            f"{100 * s['compression GFLOP'] / s['prefill GFLOP']:.1f}", ""])
    header = ["method", "retention", "video tokens at LLM input", "LLM input tokens", "K",
              "video tokens from layer K on", "video tokens per layer (mean)", "vision ms", "compression ms",
              "prefill ms", "decode ms/token", "TTFT ms", "TTFT speed-up", "compression peak MB",
              "LLM peak MB (+ KV of missing layers)", "compression GFLOP", "prefill GFLOP",
              "compression % of prefill FLOPs", "note"]
    return md_table(header, rows)


def run_method_tables(cfg: BenchConfig, results_dir: Path | str,
                      echo: Callable[[str], None] | None) -> list[Path]:
    written = []
    cells = method_cells(cfg.method_retentions)
    with tempfile.TemporaryDirectory() as tmp:
        width, height = cfg.video_size
        clip = write_clip(str(Path(tmp) / "clip.mp4"), frames=96, width=width, height=height)
        for arch in cfg.archs:
            medians, skipped = run_methods(arch, cfg, clip)
            report = new_report(f"Methods side by side, {arch}, {cfg.frames} frames of a {width}x{height} H.264 clip",
                             cfg, echo)
            report.add(depth_note(arch, cfg) + "; compression on structured synthetic features with synthetic "
                       "tower attention and keys (llava/testing/methods_bench.py); prefill and decode through the "
                       "model's own generation (`generate_from_embeddings`, an in-LLM method's own loop included); "
                       "TTFT = decode + preprocess + vision (with the extras the method needs) + compression + "
                       "prefill\n")
            if not cfg.full_depth:
                report.add(in_llm_note(arch, cfg))
            report.add(methods_table(cells, medians, skipped, cfg.in_llm_layer))
            written.append(report.write(results_dir, f"pipeline-methods-{arch}"))
    return written


# ------------------------------------------------------------------ Table 5
def llm_shape(arch: str) -> LLMShape:
    spec = ARCHITECTURES[arch]
    return LLMShape(spec.num_hidden_layers, spec.hidden_size, spec.intermediate_size)


def table5_cells(paper: Paper, retentions: tuple[float, ...]) -> list[Cell]:
    """Every printed row of Table 5 and every registered method at `retentions`, ratios from high to low, methods
    in registry order."""
    printed = [(paper.method_of(row), row.retention) for row in paper.table5]
    ours = [(m, r) for m, spec in METHOD_SPECS.items() if spec.budget != "none" for r in retentions]
    order = list(METHOD_SPECS)
    return sorted(dict.fromkeys(printed + ours), key=lambda cell: (-cell[1], order.index(cell[0])))


def table5_config(paper: Paper, method: str, retention: float) -> CompressionConfig:
    """The budget the grid runs a method at: a comparison's own knob where the paper YAML maps this RR to one
    (DyCoke's dycoke_k), else retention_ratio."""
    comparison = paper.comparisons.get(method)
    if comparison is not None and comparison.knob is not None and retention in comparison.settings:
        return CompressionConfig(method=method, **{comparison.knob: comparison.settings[retention]})
    return ratio_config(method, retention)


def table5_row(paper: Paper, inputs: MethodInputs, shape: LLMShape, cell: Cell) -> dict:
    """Our token count and Eq. 9 TFLOPs for one cell (or the reason its budget is unreachable)."""
    method, retention = cell
    tokens_in = inputs.features.shape[0] * inputs.features.shape[1]
    config = table5_config(paper, method, retention)
    if METHOD_SPECS[method].stage == "in_llm":  # FastV: every token up to its layer K, the kept ones after
        kept, layer = config.target_tokens(tokens_in), config.fastv_layer
        return {"setting": f"layers 0-{layer - 1} at {tokens_in}, then {kept}", "tokens": kept, "config": config,
                "tflops": layered_llm_flops(pruned_at_layer(tokens_in, kept, layer, shape), shape) / 1e12}
    setting = next((f"{k}={getattr(config, k)}" for k in ("dycoke_k", "retention_ratio")
                    if getattr(config, k) is not None), "every token")
    try:
        tokens = compress(inputs.features, config, extras=inputs.extras).stats.tokens_out
    except ValueError as error:
        return {"setting": setting, "reason": unreachable(error)}
    return {"setting": setting, "tokens": tokens, "tflops": llm_flops(tokens, shape) / 1e12}


def table5_rows(paper: Paper, inputs: MethodInputs, shape: LLMShape, retentions: tuple[float, ...]) -> list[dict]:
    """One dict per `table5_cells` cell: ours (tokens, TFLOPs, FR) beside the printed row where there is one."""
    printed = {(paper.method_of(row), row.retention): row for row in paper.table5}
    rows = [{"method": m, "retention": r, **table5_row(paper, inputs, shape, (m, r)), "printed": printed.get((m, r))}
            for m, r in table5_cells(paper, retentions)]
    full = next(row["tflops"] for row in rows if row["method"] == "none")
    tokens_in = inputs.features.shape[0] * inputs.features.shape[1]
    for row in rows:
        row["fr"] = None if "tflops" not in row else 100 * row["tflops"] / full
        row["note"] = row.get("reason") or table5_note(row, shape, tokens_in)
    return rows


def table5_note(row: dict, shape: LLMShape, tokens_in: int) -> str:
    """Why our TFLOPs differ from the printed ones by more than the printed digit ("" when they agree): the token
    count the printed value stands for under Eq. 9 (for FastV: the count kept from its layer K on)."""
    printed = row["printed"]
    if printed is None or abs(row["tflops"] - printed.tflops) <= FLOPS_TOLERANCE:
        return ""
    if METHOD_SPECS[row["method"]].stage == "in_llm":
        layer = row["config"].fastv_layer
        after = LLMShape(shape.layers - layer, shape.hidden, shape.ffn)
        implied = implied_tokens(printed.tflops * 1e12 - layer * layer_flops(tokens_in, shape), after)
        return (f"the printed value needs about {implied:.0f} tokens kept from layer {layer} on, not "
                f"{row['tokens']} (unexplained in the paper)")
    implied = implied_tokens(printed.tflops * 1e12, shape)
    if row["method"] == "scc":
        return (f"the printed row is a tau-mode run whose mean count, by Eq. 9, is about {implied:.0f} tokens; ours "
                f"is the exact budget round(r x N)")
    return f"the printed value implies about {implied:.0f} tokens"


def table5_table(rows: list[dict]) -> str:
    body = []
    for row in rows:
        printed = row["printed"]
        ours = [fmt(row.get("tokens")), fmt(row.get("tflops"), 2), fmt(row["fr"], 1)]
        if "tokens" not in row:
            ours = ["-"] * 3
        theirs = ["-"] * 3 if printed is None else [f"{printed.tflops:g}", f"{printed.fr:g}",
                                                   f"{row['tflops'] - printed.tflops:+.2f}" if "tflops" in row else "-"]
        body.append([row["method"], f"{100 * row['retention']:g}%", row["setting"], *ours, *theirs, row["note"]])
    header = ["method", "RR", "budget", "tokens (ours)", "TFLOPs (Eq. 9, ours)", "FR % (ours)", "TFLOPs (printed)",
              "FR % (printed)", "ours - printed", "note"]
    return md_table(header, body)


def run_table5(cfg: BenchConfig, results_dir: Path | str, echo: Callable[[str], None] | None,
               paper: Paper | None = None, dim: int | None = None) -> Path:
    """Table 5 at the 7B's shape; `dim` narrows the features (every count but SCC tau mode's ignores D)."""
    paper = paper or load_paper()
    spec, shape = ARCHITECTURES[TABLE5_ARCH], llm_shape(TABLE5_ARCH)
    inputs = synthetic_inputs(model_config(TABLE5_ARCH), TABLE5_FRAMES, dim or spec.hidden_size)
    with torch.inference_mode():
        rows = table5_rows(paper, inputs, shape, cfg.method_retentions)
    report = Report("Table 5: LLM-stage FLOPs (Eq. 9) of every method at the 7B shape", cfg.device, cfg.dtype, echo)
    report.add(f"Eq. 9 with T = {shape.layers}, d = {shape.hidden}, c = {shape.ffn}, R = 100; tokens = what each "
               f"method returns on {TABLE5_FRAMES} x {inputs.features.shape[1]} structured synthetic features (D = "
               f"{inputs.features.shape[2]}); FR against our 100% row; printed = the paper's Table 5\n")
    report.add(table5_table(rows))
    return report.write(results_dir, "pipeline-table5")


def run(cfg: BenchConfig, results_dir: Path | str = RESULTS_DIR,
        echo: Callable[[str], None] | None = None) -> list[Path]:
    """The methods and table5 sections among cfg.sections; returns the files written."""
    written = []
    if "table5" in cfg.sections:
        written.append(run_table5(cfg, results_dir, echo))
    if "methods" in cfg.sections:
        written += run_method_tables(cfg, results_dir, echo)
    return written
