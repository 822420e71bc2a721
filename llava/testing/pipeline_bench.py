"""End-to-end speed and memory of the video pipeline at the real 0.5B / 7B shapes (random weights), per stage.

Three tables per run:
1. Stages, per architecture, at every retention (100% = no compression), the retentions interleaved within each
   repeat so machine noise hits them alike (medians): decode (an H.264 clip), preprocessing, vision tower,
   projector + pool, compression, prefill (prompt embedding + the first forward, i.e. time to the first token's
   logits), per-token decode; time to first token (TTFT, the sum of the stages before it); prefill and TTFT
   speed-ups against 100%; compression's share of TTFT and its ratio to the prefill. Peak memory per stage,
   above the memory in use when the stage started. The vision stages are one call of the model's own
   `pooled_features` (its configured pooling mode and stride included), the tower's part timed by hooks on it.
2. Memory against frames (one fresh process per frame count): vision + compression (+ prefill at the same
   retention) peaks above the loaded model and its inputs, per frame, and the growth ratio
   peak(F_max) / (F_max / F_min x peak(F_min)) (linear growth = 1). Next to it, compression's time against one
   tiled similarity pass over as many tokens as its temporal step sees.
3. Dispatched ops and host round trips per `compress` call (tau and ratio mode) with its time, at a short and a
   long video (how the counts grow with frames).

Reduced depth: a CPU cannot run the real towers in minutes, so models are built with fewer tower / LLM layers
and every time is scaled: the time inside the layer stack (measured with hooks on its first and last layer) is
multiplied by real / used layers, everything outside it (patch embedding, projector, pooling, token embedding,
final norm, lm_head, sampling) is kept as measured. Memory needs no scaling except the KV cache, which has one
slice per layer: the missing layers' share is added (and shown). The tower keeps one layer's activations at a
time, so its peak does not depend on depth. `--full-depth` runs the real depth (a GPU).

Compression runs on structured synthetic features of the pooled shape [F, T, D] (regions that persist across
frames, as real features have; a random-weight tower's features have none), so its time and round-trip counts
are those of real videos rather than of noise.

Each table goes to stdout and to its own stamped file under benchmarks/results/ (`llava.testing.results`):
`pipeline-stages-<arch>`, `pipeline-memory-<arch>-<mode>` and `pipeline-counts`, then `-<dtype>-<device kind>.md`.
The script's other two sections, every compression method side by side (`methods`) and the paper's Table 5
(`table5`), are measured by `llava.testing.methods_bench` with this module's config, model and stages.
The script is benchmarks/bench_pipeline.py; the measuring lives here so that the memory table's fresh worker
processes (spawned, not forked) and the tests import it by name.

Run (CPU): python benchmarks/bench_pipeline.py
GPU: python benchmarks/bench_pipeline.py --device cuda --dtype bfloat16 --full-depth
"""
from __future__ import annotations

import argparse
import concurrent.futures
import gc
import multiprocessing
import statistics
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from transformers import LogitsProcessor, LogitsProcessorList

from llava.compression import CompressionConfig, compress
from llava.compression.timing import synced_now, timed_call
from llava.compression.types import VisualExtras
from llava.config_types import FASTV_LAYER, FRAME_BATCH_SIZE, Need
from llava.model.image_processor import SiglipVideoProcessor
from llava.model.model_config import ModelConfig
from llava.model.modeling import EncodedVideo, LlavaOnevisionVideoModel, pool_frames
from llava.testing.architectures import ARCHITECTURES, Architecture, model_config, random_model
from llava.testing.counting import count
from llava.testing.instruments import LayerClock, PeakMemory, SpanClock, counted_flops, current_mb, scale_depth
from llava.testing.results import RESULTS_DIR, Report, machine
from llava.testing.synthetic import prompt_ids, region_video, write_clip
from llava.video import load_video

PROMPT_LENGTH = 40  # prompt ids around the video placeholder (system prompt + a short question)
SIMILARITY_TILE = 4096  # rows per tile of the reference similarity pass
SECTIONS = ("stages", "memory", "counts", "methods", "table5")  # the last two: `llava.testing.methods_bench`
MATMUL_SIZE = 2048  # a square fp matmul timed once per table, shown as the machine's throughput at that moment


@dataclass
class BenchConfig:
    """What one run measures; every flag's default lives here."""

    archs: tuple[str, ...] = ("0.5b", "7b")
    frames: int = 32
    retentions: tuple[float, ...] = (1.0, 0.5, 0.35, 0.1, 0.05)
    repeats: int = 3
    vision_layers: int = 1
    text_layers: int = 1
    full_depth: bool = False
    new_tokens: int = 8
    frame_batch_size: int = FRAME_BATCH_SIZE
    device: str = "cpu"
    dtype: str = "float32"
    video_size: tuple[int, int] = (1280, 720)
    memory_arch: str = "0.5b"
    memory_frames: tuple[int, ...] = (32, 64, 128, 256)
    memory_retention: float = 0.1
    memory_tau: float | None = None  # paper mode for the memory table instead of memory_retention
    sections: tuple[str, ...] = SECTIONS
    count_taus: tuple[float, ...] = (0.9,)
    count_ratios: tuple[float, ...] = (0.1,)
    count_frames: tuple[int, ...] = (32, 128)
    method_retentions: tuple[float, ...] = (0.5, 0.35, 0.1)  # the methods and table5 sections' budgets
    in_llm_layer: int = FASTV_LAYER  # the methods section: FastV's K and DyCoke's decode-stage L

    def __post_init__(self) -> None:
        unknown = [a for a in (*self.archs, self.memory_arch) if a not in ARCHITECTURES]
        if unknown:
            raise ValueError(f"unknown architectures {unknown}; valid: {sorted(ARCHITECTURES)}")
        if not all(0.0 < r <= 1.0 for r in (*self.retentions, *self.method_retentions, self.memory_retention)):
            raise ValueError(f"retentions must be in (0, 1] (1 = no compression), got {self.retentions}, "
                             f"{self.method_retentions}, {self.memory_retention}")
        if min(self.frames, self.repeats, self.new_tokens, self.frame_batch_size, self.in_llm_layer,
               *self.memory_frames, *self.count_frames) < 1:
            raise ValueError("frames, repeats, new tokens, frame batch size, in-LLM layer, memory and count frames "
                             "must be >= 1")
        if set(self.sections) - set(SECTIONS):
            raise ValueError(f"sections must be among {SECTIONS}, got {self.sections}")
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise ValueError(f"dtype must be float32, bfloat16 or float16, got {self.dtype!r}")

    def compression(self, retention: float) -> CompressionConfig:
        return CompressionConfig(method="none") if retention >= 1.0 else CompressionConfig(retention_ratio=retention)

    def memory_compression(self) -> CompressionConfig:
        if self.memory_tau is not None:
            return CompressionConfig(tau=self.memory_tau)
        return self.compression(self.memory_retention)

    def depths(self) -> tuple[int | None, int | None]:
        """(tower layers, LLM layers) to build; None = the real depth."""
        return (None, None) if self.full_depth else (self.vision_layers, self.text_layers)


# ------------------------------------------------------------------ one pass through the stages
class TokenMarks(LogitsProcessor):
    """Clock marks each time generation has the next token's logits: the first mark ends the prefill."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.marks: list[float] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        self.marks.append(synced_now(self.device))
        return scores


@dataclass
class Bench:
    """One architecture's random model and what the stages are fed."""

    arch: str
    spec: Architecture
    model: LlavaOnevisionVideoModel
    processor: SiglipVideoProcessor
    features: torch.Tensor  # (F, T, D) structured synthetic features, compression's input
    ids: torch.Tensor  # (L,) prompt ids with one IMAGE_TOKEN_INDEX
    tower_span: SpanClock  # the tower from its patch embedding to its encoder's end, once per chunk of frames
    tower_clock: LayerClock
    text_clock: LayerClock

    @property
    def device(self) -> torch.device:
        return self.model.device

    def scale_tower(self, total_ms: float, layers_ms: float) -> float:
        return scale_depth(total_ms, layers_ms, self.model.config.vision.num_hidden_layers, self.spec.vision_layers)

    def scale_text(self, total_ms: float, layers_ms: float) -> float:
        return scale_depth(total_ms, layers_ms, self.model.config.text.num_hidden_layers,
                           self.spec.num_hidden_layers)


def pooled_side(config: ModelConfig) -> int:
    """Side of the pooled token grid (T = side^2) under `config`'s pooling mode and stride, found by running the
    model's own pooling on an empty frame (bilinear at stride 2: 27 -> 14)."""
    patches = (config.vision.image_size // config.vision.patch_size) ** 2
    tokens = pool_frames(torch.zeros(1, patches, 1), config.pool_mode, config.pool_stride).shape[1]  # (1, T, 1)
    return round(tokens**0.5)


def build_bench(arch: str, cfg: BenchConfig) -> Bench:
    spec = ARCHITECTURES[arch]
    vision_layers, text_layers = cfg.depths()
    device, dtype = torch.device(cfg.device), getattr(torch, cfg.dtype)
    model = random_model(arch, vision_layers, text_layers, dtype, device=device)
    features = region_video(frames=cfg.frames, grid=pooled_side(model.config), dim=spec.hidden_size)
    tower = model.vision_tower
    return Bench(
        arch, spec, model, SiglipVideoProcessor(spec.vision["image_size"]), features.to(device, dtype),
        prompt_ids(1, PROMPT_LENGTH, spec.vocab_size)[0].to(device), SpanClock(tower.embeddings, tower.encoder, device),
        LayerClock(tower.encoder.layers, device), LayerClock(model.language_model.model.layers, device),
    )


def vision_stages(bench: Bench, pixels: torch.Tensor, frame_batch_size: int,
                  needs: tuple[Need, ...] = ()) -> tuple[torch.Tensor, dict[str, float]]:
    """`model.visual_inputs` (with the extras `needs` names; none = `pooled_features`) timed as a whole, the
    tower's part from hooks (`tower_span`), the rest (projector and pooling, with the model's configured mode and
    stride, and the extras' own work) as the difference: (pooled [F, T, D], {stage: ms})."""
    model = bench.model
    pixels = pixels.to(bench.device, model.vision_tower.embeddings.patch_embedding.weight.dtype)  # no copy inside
    (pooled, _), total_ms = timed_call(bench.device, lambda: model.visual_inputs(pixels, needs, frame_batch_size))
    tower_ms = sum(bench.tower_span.take())
    times = {"tower": bench.scale_tower(tower_ms, sum(bench.tower_clock.take())), "proj+pool": total_ms - tower_ms}
    return pooled, times


def llm_stages(bench: Bench, video: EncodedVideo, new_tokens: int) -> dict[str, float]:
    """Prefill (embedding the prompt + first forward) and per-token decode through transformers' generation."""
    marks = TokenMarks(bench.device)
    start = synced_now(bench.device)
    packed = bench.model.embed_prompts(bench.ids[None], [video])
    bench.model.generate_from_embeddings(
        packed, max_new_tokens=new_tokens + 1, min_new_tokens=new_tokens + 1, do_sample=False, eos_token_id=None,
        pad_token_id=0, logits_processor=LogitsProcessorList([marks]))
    spans = bench.text_clock.take()
    if len(spans) != len(marks.marks):
        raise RuntimeError(f"{len(spans)} forward passes for {len(marks.marks)} tokens: generation changed shape")
    prefill = bench.scale_text((marks.marks[0] - start) * 1000.0, spans[0])
    decode = bench.scale_text((marks.marks[-1] - marks.marks[0]) * 1000.0, sum(spans[1:])) / new_tokens
    return {"prefill": prefill, "decode/token": decode, "llm tokens": float(packed.inputs_embeds.shape[1])}


def stage_flops(bench: Bench, config: CompressionConfig, features: torch.Tensor | None = None,
                extras: VisualExtras | None = None) -> dict[str, float]:
    """GFLOP of one compression call (of `features` [F, T, D], default the bench's, with `extras`) and of the
    prefill it feeds (the layer stack's part scaled to the real depth as its time is); counted once, apart from
    the timed passes, since counting slows the ops it counts."""
    features = bench.features if features is None else features
    video, compression, _ = counted_flops(lambda: bench.model.compress_features(features, config, extras=extras))
    layers = bench.model.language_model.model.layers
    _, total, inside = counted_flops(lambda: prefill_forward(bench.model, bench.ids, video), layers)
    prefill = scale_depth(total, inside, len(layers), bench.spec.num_hidden_layers)
    return {"compression GFLOP": compression / 1e9, "prefill GFLOP": prefill / 1e9}


def missing_kv_mb(model: LlavaOnevisionVideoModel, spec: Architecture, tokens: float) -> float:
    """KV cache that the layers left out of `model` would hold for `tokens` positions (keys + values)."""
    text = model.config.text
    head_dim = text.hidden_size // text.num_attention_heads
    layers = spec.num_hidden_layers - text.num_hidden_layers
    return layers * tokens * 2 * text.num_key_value_heads * head_dim * model.dtype.itemsize / 2**20


def one_pass(bench: Bench, cfg: BenchConfig, clip: str) -> dict[float, dict[str, float]]:
    """Every stage once, then compression and the LLM at each retention in turn: {retention: {stage: value}}."""
    cpu = torch.device("cpu")
    frames, decode_ms = timed_call(cpu, lambda: load_video(clip, cfg.frames).frames)
    pixels, pre_ms = timed_call(cpu, lambda: bench.processor.preprocess(frames)["pixel_values"])
    with PeakMemory(bench.device) as vision_peak:
        pooled, vision_ms = vision_stages(bench, pixels, cfg.frame_batch_size)
    del pooled  # compression runs on structured synthetic features of the same shape (module docstring)
    shared = {"decode": decode_ms, "preprocess": pre_ms, **vision_ms}
    shared["vision MB"] = vision_peak.mb
    results = {}
    for retention in cfg.retentions:
        with PeakMemory(bench.device) as compress_peak:
            video, compress_ms = timed_call(bench.device, lambda r=retention: bench.model.compress_features(
                bench.features, cfg.compression(r)))
        with PeakMemory(bench.device) as llm_peak:
            llm = llm_stages(bench, video, cfg.new_tokens)
        results[retention] = {**shared, "compression": compress_ms, **llm, "compression MB": compress_peak.mb,
                              "llm MB": llm_peak.mb}
        del video
    return results


def run_stages(arch: str, cfg: BenchConfig, clip: str) -> dict[float, dict[str, float]]:
    """Medians over cfg.repeats interleaved passes (after one warm-up pass on one frame at the last retention)."""
    bench = build_bench(arch, cfg)
    with torch.inference_mode():
        one_pass(bench, BenchConfig(**{**asdict(cfg), "frames": 1, "retentions": cfg.retentions[-1:]}), clip)
        passes = [one_pass(bench, cfg, clip) for _ in range(cfg.repeats)]
        flops = {r: stage_flops(bench, cfg.compression(r)) for r in cfg.retentions}
    medians = {r: {k: median_of([p[r][k] for p in passes]) for k in passes[0][r]} | flops[r] for r in cfg.retentions}
    for stages in medians.values():
        stages["TTFT"] = sum(stages[k] for k in ("decode", "preprocess", "tower", "proj+pool", "compression",
                                                  "prefill"))
        stages["kv MB"] = missing_kv_mb(bench.model, bench.spec, stages["llm tokens"] + cfg.new_tokens)
    for clock in (bench.tower_span, bench.tower_clock, bench.text_clock):
        clock.remove()
    return medians


def median_of(values: list[float | None]) -> float | None:
    return None if any(v is None for v in values) else statistics.median(values)


# ------------------------------------------------------------------ memory against frames (fresh process each)
def frames_worker(cfg: BenchConfig, frames: int, threads: int) -> dict[str, float]:
    """Vision + compression + prefill of `frames` frames in this (fresh) process; peaks above model + inputs."""
    torch.set_num_threads(threads)
    spec, device = ARCHITECTURES[cfg.memory_arch], torch.device(cfg.device)
    model = random_model(cfg.memory_arch, *cfg.depths(), getattr(torch, cfg.dtype), device=device)
    size = spec.vision["image_size"]
    pixels = torch.randn(frames, 3, size, size, generator=torch.Generator().manual_seed(1)).to(device, model.dtype)
    features = region_video(frames=frames, grid=pooled_side(model.config), dim=spec.hidden_size)
    features = features.to(device, model.dtype)
    ids = prompt_ids(1, PROMPT_LENGTH, spec.vocab_size)[0].to(device)
    compression = cfg.memory_compression()
    with torch.inference_mode():
        warm = CompressionConfig(tau=0.9)  # warm-up (kernels, thread pools) on two frames
        prefill_forward(model, ids, model.compress_features(model.pooled_features(pixels[:2]), warm))
        model.compress_features(features[:2], warm)
        gc.collect()
        base = current_mb(device)
        with PeakMemory(device, base) as vision:
            pooled = model.pooled_features(pixels, cfg.frame_batch_size)
        with PeakMemory(device, base) as compression_peak:
            video, compress_ms = timed_call(device, lambda: model.compress_features(features, compression))
        del pooled
        with PeakMemory(device, base) as prefill:
            prefill_forward(model, ids, video)
        similarity_ms = similarity_pass_ms(features, video.stats.tokens_spatial or video.stats.tokens_out)
    inputs_mb = (pixels.nbytes + features.nbytes) / 2**20
    return {"frames": frames, "inputs MB": inputs_mb, "vision MB": vision.mb, "compression MB": compression_peak.mb,
            "prefill MB": prefill.mb, "kv MB": missing_kv_mb(model, spec, video.tokens.shape[0] + PROMPT_LENGTH),
            "compression ms": compress_ms, "similarity ms": similarity_ms,
            "temporal tokens": video.stats.tokens_spatial or 0, "tokens out": video.stats.tokens_out}


def prefill_forward(model: LlavaOnevisionVideoModel, ids: torch.Tensor, video: EncodedVideo) -> None:
    """The first forward of generation: KV cache for the whole prompt, logits of the last position only."""
    model.prefill(model.embed_prompts(ids[None], [video]), use_cache=True, logits_to_keep=1)


def similarity_pass_ms(features: torch.Tensor, tokens: int) -> float:
    """One pass of cosine similarities among `tokens` tokens in row tiles (memory O(tile x tokens)): the floor of
    any exact temporal step over them."""
    x = F.normalize(features.reshape(-1, features.shape[-1])[:tokens].float(), dim=-1)  # (M', D)

    def tiles() -> None:
        for rows in torch.split(x, SIMILARITY_TILE):
            rows @ x.T  # (tile, M')

    return timed_call(x.device, tiles)[1]


def run_memory(cfg: BenchConfig) -> list[dict[str, float]]:
    context = multiprocessing.get_context("spawn")
    out = []
    for frames in cfg.memory_frames:
        with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
            out.append(pool.submit(frames_worker, cfg, frames, torch.get_num_threads()).result())
    return out


# ------------------------------------------------------------------ ops and round trips per compress call
def run_counts(cfg: BenchConfig) -> list[dict[str, Any]]:
    rows = []
    configs = [CompressionConfig(tau=t) for t in cfg.count_taus]
    configs += [CompressionConfig(retention_ratio=r) for r in cfg.count_ratios]
    for arch in cfg.archs:
        spec, side = ARCHITECTURES[arch], pooled_side(model_config(arch))
        for frames in cfg.count_frames:
            features = region_video(frames=frames, grid=side, dim=spec.hidden_size)
            features = features.to(cfg.device, getattr(torch, cfg.dtype))
            rows += [count_row(features, config, cfg.repeats) for config in configs]
    return rows


def count_row(features: torch.Tensor, config: CompressionConfig, repeats: int) -> dict[str, Any]:
    """Ops and round trips of one `compress` call, and its median time over `repeats` calls."""
    counts = count(compress, features, config)
    times = [timed_call(features.device, lambda: compress(features, config)) for _ in range(repeats)]
    mode = f"tau {config.tau}" if config.tau is not None else f"r {config.retention_ratio}"
    return {"frames": features.shape[0], "D": features.shape[-1], "mode": mode,
            "tokens out": times[0][0].stats.tokens_out, "ops": counts.ops,
            "round trips": counts.syncs, "ms": statistics.median(ms for _, ms in times),
            "by op": ", ".join(f"{name} {n}" for name, n in counts.by_op.most_common(4))}


# ------------------------------------------------------------------ tables
def fmt(value: float | None, digits: int = 0) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def stage_tables(arch: str, cfg: BenchConfig, medians: dict[float, dict[str, float]]) -> str:
    full = medians[max(medians)]
    times, memory = [], []
    for retention, s in medians.items():
        label = f"{100 * retention:g}%" + (" (none)" if retention >= 1.0 else "")
        times.append([label, f"{s['llm tokens']:.0f}"] + [fmt(s[k]) for k in (
            "decode", "preprocess", "tower", "proj+pool", "compression", "prefill", "TTFT")] + [
            fmt(s["decode/token"], 1), f"{full['prefill'] / s['prefill']:.2f}", f"{full['TTFT'] / s['TTFT']:.2f}",
            f"{100 * s['compression'] / s['TTFT']:.2f}", f"{100 * s['compression'] / s['prefill']:.1f}",
            fmt(s["compression GFLOP"], 1), fmt(s["prefill GFLOP"]),
            f"{100 * s['compression GFLOP'] / s['prefill GFLOP']:.1f}"])
        llm = None if s["llm MB"] is None else s["llm MB"] + s["kv MB"]
        memory.append([label, fmt(s["vision MB"]), fmt(s["compression MB"]), fmt(s["llm MB"]), fmt(s["kv MB"]),
                       fmt(llm)])
    time_header = ["retention", "LLM tokens", "decode ms", "preprocess ms", "tower ms", "proj+pool ms",
                   "compression ms", "prefill ms", "TTFT ms", "decode ms/token", "prefill speed-up",
                   "TTFT speed-up", "compression % of TTFT", "compression % of prefill", "compression GFLOP",
                   "prefill GFLOP", "compression % of prefill FLOPs"]
    memory_header = ["retention", "vision", "compression", "prefill+decode (measured)", "+ KV of missing layers",
                     "prefill+decode"]
    return (f"{md_table(time_header, times)}\n\npeak memory MB above each stage's start ({arch}):\n"
            f"{md_table(memory_header, memory)}")


def memory_table(cfg: BenchConfig, rows: list[dict[str, float]]) -> str:
    body = []
    for row in rows:
        both = None if row["vision MB"] is None else max(row["vision MB"], row["compression MB"])
        body.append([str(row["frames"]), fmt(row["inputs MB"]), fmt(row["vision MB"]), fmt(row["compression MB"]),
                     fmt(both), fmt(None if both is None else both / row["frames"], 1),
                     fmt(None if row["prefill MB"] is None else row["prefill MB"] + row["kv MB"]),
                     f"{row['temporal tokens']} -> {row['tokens out']}", fmt(row["compression ms"]),
                     fmt(row["similarity ms"]), f"{row['compression ms'] / row['similarity ms']:.2f}"])
        row["vision+compression MB"] = both
    header = ["frames", "inputs MB", "vision peak MB", "compression peak MB", "vision+compression peak MB",
              "MB / frame", "prefill peak MB (+ KV of missing layers)",
              "temporal tokens -> out", "compression ms", "similarity pass ms",
              "compression / similarity"]
    first, last = rows[0], rows[-1]
    growth = last["frames"] / first["frames"]
    ratio = (None if first["vision+compression MB"] is None
             else last["vision+compression MB"] / (growth * first["vision+compression MB"]))
    return (f"{md_table(header, body)}\n\npeak({last['frames']}) / ({growth:g} x peak({first['frames']})), vision + "
            f"compression: {fmt(ratio, 2)} (linear = 1; target <= 1.5)")


def counts_table(rows: list[dict[str, Any]]) -> str:
    header = ["frames", "D", "mode", "tokens out", "ops dispatched", "host round trips", "round trips by op", "ms"]
    return md_table(header, [[str(r["frames"]), str(r["D"]), r["mode"], str(r["tokens out"]), str(r["ops"]),
                            str(r["round trips"]), r["by op"], fmt(r["ms"])] for r in rows])


def conditions(cfg: BenchConfig) -> str:
    """The run's settings and the machine's matmul throughput right now (how busy it is)."""
    device = torch.device(cfg.device)
    return (f"{cfg.device}: {machine(device)}, {cfg.dtype}, medians of {cfg.repeats} interleaved repeats; a "
            f"{MATMUL_SIZE}^3 matmul runs at {matmul_gflops(device, getattr(torch, cfg.dtype)):.0f} GFLOP/s now")


def matmul_gflops(device: torch.device, dtype: torch.dtype) -> float:
    a = torch.randn(MATMUL_SIZE, MATMUL_SIZE, device=device, dtype=dtype)
    a @ a  # warm-up
    _, ms = timed_call(device, lambda: [a @ a for _ in range(3)])
    return 3 * 2 * MATMUL_SIZE**3 / (ms / 1000.0) / 1e9


def depth_note(arch: str, cfg: BenchConfig) -> str:
    spec = ARCHITECTURES[arch]
    if cfg.full_depth:
        return f"{arch}: real depth ({spec.vision_layers} tower layers, {spec.num_hidden_layers} LLM layers)"
    return (f"{arch}: built with {cfg.vision_layers}/{spec.vision_layers} tower layers and {cfg.text_layers}/"
            f"{spec.num_hidden_layers} LLM layers; times in the layer stacks scaled by layer count, the rest "
            f"(embeddings, projector, pooling, norm, lm_head, sampling) as measured")


def run(cfg: BenchConfig, results_dir: Path | str = RESULTS_DIR,
        echo: Callable[[str], None] | None = None) -> list[Path]:
    """Measure the selected tables; each goes to `echo` as it is done and to its own file in `results_dir`.
    Returns the files written."""
    written = []
    if "stages" in cfg.sections:
        written += run_stage_tables(cfg, results_dir, echo)
    if "memory" in cfg.sections:
        mode = f"tau {cfg.memory_tau}" if cfg.memory_tau is not None else f"retention {100 * cfg.memory_retention:g}%"
        report = new_report(f"Memory against frames, {cfg.memory_arch}, {mode}", cfg, echo)
        report.add(f"one fresh process per row; peaks above the loaded model and its inputs; "
                   f"{depth_note(cfg.memory_arch, cfg)} (the tower holds one layer's activations at a time, so its "
                   "peak does not depend on depth)\n")
        report.add(memory_table(cfg, run_memory(cfg)))
        tag = f"tau{cfg.memory_tau:g}" if cfg.memory_tau is not None else f"r{cfg.memory_retention:g}"
        written.append(report.write(results_dir, f"pipeline-memory-{cfg.memory_arch}-{tag}"))
    if "counts" in cfg.sections:
        report = new_report("Ops and host round trips per compress call, frames x T tokens of synthetic features",
                         cfg, echo)
        report.add(counts_table(run_counts(cfg)))
        written.append(report.write(results_dir, "pipeline-counts"))
    return written


def new_report(title: str, cfg: BenchConfig, echo: Callable[[str], None] | None) -> Report:
    report = Report(title, cfg.device, cfg.dtype, echo)
    report.add(conditions(cfg) + "\n")
    return report


def run_stage_tables(cfg: BenchConfig, results_dir: Path | str, echo: Callable[[str], None] | None) -> list[Path]:
    written = []
    with tempfile.TemporaryDirectory() as tmp:
        width, height = cfg.video_size
        clip = write_clip(str(Path(tmp) / "clip.mp4"), frames=96, width=width, height=height)
        for arch in cfg.archs:
            medians = run_stages(arch, cfg, clip)
            report = new_report(f"Stages, {arch}, {cfg.frames} frames of a {width}x{height} H.264 clip, "
                             f"{cfg.new_tokens} decoded tokens", cfg, echo)
            report.add(depth_note(arch, cfg) + "\n")
            report.add(stage_tables(arch, cfg, medians))
            written.append(report.write(results_dir, f"pipeline-stages-{arch}"))
    return written


def parse_args(argv: list[str] | None = None) -> tuple[BenchConfig, Path]:
    """(the run's config, the directory its result files go to) from command-line flags."""
    defaults = BenchConfig()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for f in fields(BenchConfig):
        value = getattr(defaults, f.name)
        flag = "--" + f.name.replace("_", "-")
        if isinstance(value, bool):
            parser.add_argument(flag, action="store_true")
        elif isinstance(value, tuple):
            parser.add_argument(flag, type=type(value[0]), nargs="+", default=value)
        else:
            parser.add_argument(flag, type=float if value is None else type(value), default=value)
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR, help="where the tables' files go")
    args = vars(parser.parse_args(argv))
    results_dir = args.pop("results_dir")
    return BenchConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in args.items()}), results_dir
