"""End-to-end speed and memory of the video pipeline at the real 0.5B / 7B shapes (random weights), per stage.

Three tables per run:
1. Stages, per architecture, at every retention (100% = no compression), the retentions interleaved within each
   repeat so machine noise hits them alike (medians): decode (an H.264 clip), preprocessing, vision tower,
   projector + pool, compression, prefill (prompt embedding + the first forward, i.e. time to the first token's
   logits), per-token decode; time to first token (TTFT, the sum of the stages before it); prefill and TTFT
   speed-ups against 100%; compression's share of TTFT and its ratio to the prefill. Peak memory per stage,
   above the memory in use when the stage started.
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

Run (CPU, as in the README): python benchmarks/bench_pipeline.py
GPU: python benchmarks/bench_pipeline.py --device cuda --dtype bfloat16 --full-depth
"""
from __future__ import annotations

import argparse
import concurrent.futures
import gc
import multiprocessing
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from transformers import LogitsProcessor, LogitsProcessorList

sys.path.insert(0, str(Path(__file__).parent))
from architectures import ARCHITECTURES, Architecture, random_model  # noqa: E402
from bench_reuse import prompts  # noqa: E402
from measure import LayerClock, PeakMemory, counted_flops, current_mb, scale_depth, sync, timed  # noqa: E402
from synthetic import region_video, write_clip  # noqa: E402

from llava.compression import CompressionConfig, compress  # noqa: E402
from llava.compression.counting import count  # noqa: E402
from llava.model.image_processor import SiglipVideoProcessor  # noqa: E402
from llava.model.model_config import FRAME_BATCH_SIZE  # noqa: E402
from llava.model.modeling import EncodedVideo, LlavaOnevisionVideoModel, pool_frames  # noqa: E402
from llava.video import load_video  # noqa: E402

PROMPT_LENGTH = 40  # prompt ids around the video placeholder (system prompt + a short question)
SIMILARITY_TILE = 4096  # rows per tile of the reference similarity pass
SECTIONS = ("stages", "memory", "counts")
MATMUL_SIZE = 2048  # a square fp matmul timed once per run, printed as the machine's throughput at that moment


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

    def __post_init__(self) -> None:
        unknown = [a for a in (*self.archs, self.memory_arch) if a not in ARCHITECTURES]
        if unknown:
            raise ValueError(f"unknown architectures {unknown}; valid: {sorted(ARCHITECTURES)}")
        if not all(0.0 < r <= 1.0 for r in (*self.retentions, self.memory_retention)):
            raise ValueError(f"retentions must be in (0, 1] (1 = no compression), got {self.retentions}, "
                             f"{self.memory_retention}")
        if min(self.frames, self.repeats, self.new_tokens, self.frame_batch_size, *self.memory_frames,
               *self.count_frames) < 1:
            raise ValueError("frames, repeats, new tokens, frame batch size, memory and count frames must be >= 1")
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
        sync(self.device)
        self.marks.append(time.perf_counter())
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


def tokens_per_frame_side(spec: Architecture) -> int:
    """Side of the pooled grid: bilinear pooling halves the patch grid, rounding up (27 -> 14)."""
    return -(-(spec.vision["image_size"] // spec.vision["patch_size"]) // 2)


def build_bench(arch: str, cfg: BenchConfig) -> Bench:
    spec = ARCHITECTURES[arch]
    vision_layers, text_layers = cfg.depths()
    device, dtype = torch.device(cfg.device), getattr(torch, cfg.dtype)
    model = random_model(arch, vision_layers, text_layers, dtype).to(device)
    features = region_video(frames=cfg.frames, grid=tokens_per_frame_side(spec), dim=spec.hidden_size)
    return Bench(
        arch, spec, model, SiglipVideoProcessor(spec.vision["image_size"]), features.to(device, dtype),
        prompts(1, PROMPT_LENGTH, spec.vocab_size)[0].to(device),
        LayerClock(model.vision_tower.encoder.layers, device), LayerClock(model.language_model.model.layers, device),
    )


def vision_stages(bench: Bench, pixels: torch.Tensor, frame_batch_size: int) -> tuple[torch.Tensor, dict[str, float]]:
    """The tower, then projector + pool, chunk by chunk as `model.pooled_features` runs them, each timed:
    (pooled [F, T, D], {stage: ms})."""
    model, device = bench.model, bench.device
    tower = model.vision_tower
    param = tower.embeddings.patch_embedding.weight
    tower_ms = pool_ms = 0.0
    pooled = []
    for chunk in torch.split(pixels, frame_batch_size):
        chunk = chunk.to(device=device, dtype=param.dtype)
        hidden, ms = timed(device, lambda c=chunk: tower.encoder(inputs_embeds=tower.embeddings(c)).last_hidden_state)
        tower_ms += ms
        out, ms = timed(device, lambda h=hidden: pool_frames(model.projector(h), model.config.pool_mode))  # (f, T, D)
        pool_ms += ms
        pooled.append(out)
    times = {"tower": bench.scale_tower(tower_ms, sum(bench.tower_clock.take())), "proj+pool": pool_ms}
    return torch.cat(pooled), times


def llm_stages(bench: Bench, video: EncodedVideo, new_tokens: int) -> dict[str, float]:
    """Prefill (embedding the prompt + first forward) and per-token decode through transformers' generation."""
    marks = TokenMarks(bench.device)
    sync(bench.device)
    start = time.perf_counter()
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


def stage_flops(bench: Bench, config: CompressionConfig) -> dict[str, float]:
    """GFLOP of one compression call and of the prefill it feeds (the layer stack's part scaled to the real depth
    as its time is); counted once, apart from the timed passes, since counting slows the ops it counts."""
    video, compression, _ = counted_flops(lambda: bench.model.compress_features(bench.features, config))
    layers = bench.model.language_model.model.layers
    _, total, inside = counted_flops(lambda: _prefill(bench.model, bench.ids, video), layers)
    prefill = scale_depth(total, inside, len(layers), bench.spec.num_hidden_layers)
    return {"compression GFLOP": compression / 1e9, "prefill GFLOP": prefill / 1e9}


def _missing_kv_mb(model: LlavaOnevisionVideoModel, spec: Architecture, tokens: float) -> float:
    """KV cache that the layers left out of `model` would hold for `tokens` positions (keys + values)."""
    text = model.config.text
    head_dim = text.hidden_size // text.num_attention_heads
    layers = spec.num_hidden_layers - text.num_hidden_layers
    return layers * tokens * 2 * text.num_key_value_heads * head_dim * model.dtype.itemsize / 2**20


def one_pass(bench: Bench, cfg: BenchConfig, clip: str) -> dict[float, dict[str, float]]:
    """Every stage once, then compression and the LLM at each retention in turn: {retention: {stage: value}}."""
    cpu = torch.device("cpu")
    frames, decode_ms = timed(cpu, lambda: load_video(clip, cfg.frames).frames)
    pixels, pre_ms = timed(cpu, lambda: bench.processor.preprocess(frames)["pixel_values"])
    with PeakMemory(bench.device) as vision_peak:
        pooled, vision_ms = vision_stages(bench, pixels, cfg.frame_batch_size)
    del pooled  # compression runs on structured synthetic features of the same shape (module docstring)
    shared = {"decode": decode_ms, "preprocess": pre_ms, **vision_ms}
    shared["vision MB"] = vision_peak.mb
    results = {}
    for retention in cfg.retentions:
        with PeakMemory(bench.device) as compress_peak:
            video, compress_ms = timed(bench.device, lambda r=retention: bench.model.compress_features(
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
    medians = {r: {k: _median([p[r][k] for p in passes]) for k in passes[0][r]} | flops[r] for r in cfg.retentions}
    for stages in medians.values():
        stages["TTFT"] = sum(stages[k] for k in ("decode", "preprocess", "tower", "proj+pool", "compression",
                                                  "prefill"))
        stages["kv MB"] = _missing_kv_mb(bench.model, bench.spec, stages["llm tokens"] + cfg.new_tokens)
    bench.tower_clock.remove()
    bench.text_clock.remove()
    return medians


def _median(values: list[float | None]) -> float | None:
    return None if any(v is None for v in values) else statistics.median(values)


# ------------------------------------------------------------------ memory against frames (fresh process each)
def frames_worker(cfg: BenchConfig, frames: int, threads: int) -> dict[str, float]:
    """Vision + compression + prefill of `frames` frames in this (fresh) process; peaks above model + inputs."""
    torch.set_num_threads(threads)
    spec, device = ARCHITECTURES[cfg.memory_arch], torch.device(cfg.device)
    model = random_model(cfg.memory_arch, *cfg.depths(), getattr(torch, cfg.dtype)).to(device)
    size = spec.vision["image_size"]
    pixels = torch.randn(frames, 3, size, size, generator=torch.Generator().manual_seed(1)).to(device, model.dtype)
    features = region_video(frames=frames, grid=tokens_per_frame_side(spec), dim=spec.hidden_size)
    features = features.to(device, model.dtype)
    ids = prompts(1, PROMPT_LENGTH, spec.vocab_size)[0].to(device)
    compression = cfg.memory_compression()
    with torch.inference_mode():
        warm = CompressionConfig(tau=0.9)  # warm-up (kernels, thread pools) on two frames
        _prefill(model, ids, model.compress_features(model.pooled_features(pixels[:2]), warm))
        model.compress_features(features[:2], warm)
        gc.collect()
        base = current_mb(device)
        with PeakMemory(device, base) as vision:
            pooled = model.pooled_features(pixels, cfg.frame_batch_size)
        with PeakMemory(device, base) as compression_peak:
            video, compress_ms = timed(device, lambda: model.compress_features(features, compression))
        del pooled
        with PeakMemory(device, base) as prefill:
            _prefill(model, ids, video)
        similarity_ms = similarity_pass_ms(features, video.stats.tokens_spatial or video.stats.tokens_out)
    inputs_mb = (pixels.nbytes + features.nbytes) / 2**20
    return {"frames": frames, "inputs MB": inputs_mb, "vision MB": vision.mb, "compression MB": compression_peak.mb,
            "prefill MB": prefill.mb, "kv MB": _missing_kv_mb(model, spec, video.tokens.shape[0] + PROMPT_LENGTH),
            "compression ms": compress_ms, "similarity ms": similarity_ms,
            "temporal tokens": video.stats.tokens_spatial or 0, "tokens out": video.stats.tokens_out}


def _prefill(model: LlavaOnevisionVideoModel, ids: torch.Tensor, video: EncodedVideo) -> None:
    """The first forward of generation: KV cache for the whole prompt, logits of the last position only."""
    model.prefill(model.embed_prompts(ids[None], [video]), use_cache=True, logits_to_keep=1)


def similarity_pass_ms(features: torch.Tensor, tokens: int) -> float:
    """One pass of cosine similarities among `tokens` tokens in row tiles (memory O(tile x tokens)): the floor of
    any exact temporal step over them."""
    x = F.normalize(features.reshape(-1, features.shape[-1])[:tokens].float(), dim=-1)  # (M', D)

    def tiles() -> None:
        for rows in torch.split(x, SIMILARITY_TILE):
            rows @ x.T  # (tile, M')

    return timed(x.device, tiles)[1]


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
        spec = ARCHITECTURES[arch]
        for frames in cfg.count_frames:
            features = region_video(frames=frames, grid=tokens_per_frame_side(spec), dim=spec.hidden_size)
            features = features.to(cfg.device, getattr(torch, cfg.dtype))
            rows += [count_row(features, config, cfg.repeats) for config in configs]
    return rows


def count_row(features: torch.Tensor, config: CompressionConfig, repeats: int) -> dict[str, Any]:
    """Ops and round trips of one `compress` call, and its median time over `repeats` calls."""
    counts = count(compress, features, config)
    times = [timed(features.device, lambda: compress(features, config)) for _ in range(repeats)]
    mode = f"tau {config.tau}" if config.tau is not None else f"r {config.retention_ratio}"
    return {"frames": features.shape[0], "D": features.shape[-1], "mode": mode,
            "tokens out": times[0][0].stats.tokens_out, "ops": counts.ops,
            "round trips": counts.syncs, "ms": statistics.median(ms for _, ms in times),
            "by op": ", ".join(f"{name} {n}" for name, n in counts.by_op.most_common(4))}


# ------------------------------------------------------------------ tables
def _fmt(value: float | None, digits: int = 0) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def stage_tables(arch: str, cfg: BenchConfig, medians: dict[float, dict[str, float]]) -> str:
    full = medians[max(medians)]
    times, memory = [], []
    for retention, s in medians.items():
        label = f"{100 * retention:g}%" + (" (none)" if retention >= 1.0 else "")
        times.append([label, f"{s['llm tokens']:.0f}"] + [_fmt(s[k]) for k in (
            "decode", "preprocess", "tower", "proj+pool", "compression", "prefill", "TTFT")] + [
            _fmt(s["decode/token"], 1), f"{full['prefill'] / s['prefill']:.2f}", f"{full['TTFT'] / s['TTFT']:.2f}",
            f"{100 * s['compression'] / s['TTFT']:.2f}", f"{100 * s['compression'] / s['prefill']:.1f}",
            _fmt(s["compression GFLOP"], 1), _fmt(s["prefill GFLOP"]),
            f"{100 * s['compression GFLOP'] / s['prefill GFLOP']:.1f}"])
        llm = None if s["llm MB"] is None else s["llm MB"] + s["kv MB"]
        memory.append([label, _fmt(s["vision MB"]), _fmt(s["compression MB"]), _fmt(s["llm MB"]), _fmt(s["kv MB"]),
                       _fmt(llm)])
    time_header = ["retention", "LLM tokens", "decode ms", "preprocess ms", "tower ms", "proj+pool ms",
                   "compression ms", "prefill ms", "TTFT ms", "decode ms/token", "prefill speed-up",
                   "TTFT speed-up", "compression % of TTFT", "compression % of prefill", "compression GFLOP",
                   "prefill GFLOP", "compression % of prefill FLOPs"]
    memory_header = ["retention", "vision", "compression", "prefill+decode (measured)", "+ KV of missing layers",
                     "prefill+decode"]
    return (f"{_table(time_header, times)}\n\npeak memory MB above each stage's start ({arch}):\n"
            f"{_table(memory_header, memory)}")


def memory_table(cfg: BenchConfig, rows: list[dict[str, float]]) -> str:
    body = []
    for row in rows:
        both = None if row["vision MB"] is None else max(row["vision MB"], row["compression MB"])
        body.append([str(row["frames"]), _fmt(row["inputs MB"]), _fmt(row["vision MB"]), _fmt(row["compression MB"]),
                     _fmt(both), _fmt(None if both is None else both / row["frames"], 1),
                     _fmt(None if row["prefill MB"] is None else row["prefill MB"] + row["kv MB"]),
                     f"{row['temporal tokens']} -> {row['tokens out']}", _fmt(row["compression ms"]),
                     _fmt(row["similarity ms"]), f"{row['compression ms'] / row['similarity ms']:.2f}"])
        row["vision+compression MB"] = both
    header = ["frames", "inputs MB", "vision peak MB", "compression peak MB", "vision+compression peak MB",
              "MB / frame", "prefill peak MB (+ KV of missing layers)",
              "temporal tokens -> out", "compression ms", "similarity pass ms",
              "compression / similarity"]
    first, last = rows[0], rows[-1]
    growth = last["frames"] / first["frames"]
    ratio = (None if first["vision+compression MB"] is None
             else last["vision+compression MB"] / (growth * first["vision+compression MB"]))
    return (f"{_table(header, body)}\n\npeak({last['frames']}) / ({growth:g} x peak({first['frames']})), vision + "
            f"compression: {_fmt(ratio, 2)} (linear = 1; target <= 1.5)")


def counts_table(rows: list[dict[str, Any]]) -> str:
    header = ["frames", "D", "mode", "tokens out", "ops dispatched", "host round trips", "round trips by op", "ms"]
    return _table(header, [[str(r["frames"]), str(r["D"]), r["mode"], str(r["tokens out"]), str(r["ops"]),
                            str(r["round trips"]), r["by op"], _fmt(r["ms"])] for r in rows])


def machine(cfg: BenchConfig) -> str:
    device = torch.device(cfg.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    return (f"torch {torch.__version__}, {cfg.device} ({name}), {torch.get_num_threads()} threads, {cfg.dtype}, "
            f"medians of {cfg.repeats} interleaved repeats; a {MATMUL_SIZE}^3 matmul runs at "
            f"{matmul_gflops(device, getattr(torch, cfg.dtype)):.0f} GFLOP/s now (how busy the machine is)")


def matmul_gflops(device: torch.device, dtype: torch.dtype) -> float:
    a = torch.randn(MATMUL_SIZE, MATMUL_SIZE, device=device, dtype=dtype)
    a @ a  # warm-up
    _, ms = timed(device, lambda: [a @ a for _ in range(3)])
    return 3 * 2 * MATMUL_SIZE**3 / (ms / 1000.0) / 1e9


def cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return names[0] if names else platform.processor() or platform.machine()


def depth_note(arch: str, cfg: BenchConfig) -> str:
    spec = ARCHITECTURES[arch]
    if cfg.full_depth:
        return f"{arch}: real depth ({spec.vision_layers} tower layers, {spec.num_hidden_layers} LLM layers)"
    return (f"{arch}: built with {cfg.vision_layers}/{spec.vision_layers} tower layers and {cfg.text_layers}/"
            f"{spec.num_hidden_layers} LLM layers; times in the layer stacks scaled by layer count, the rest "
            f"(embeddings, projector, pooling, norm, lm_head, sampling) as measured")


def run(cfg: BenchConfig) -> None:
    """Measure and print the selected tables."""
    print(machine(cfg))
    if "stages" in cfg.sections:
        run_stage_tables(cfg)
    if "memory" in cfg.sections:
        mode = f"tau {cfg.memory_tau}" if cfg.memory_tau is not None else f"retention {100 * cfg.memory_retention:g}%"
        print(f"\n## Memory against frames, {cfg.memory_arch}, {mode}\none fresh process per row; peaks above the "
              f"loaded model and its inputs; {depth_note(cfg.memory_arch, cfg)} (the tower holds one layer's "
              "activations at a time, so its peak does not depend on depth)\n")
        print(memory_table(cfg, run_memory(cfg)))
    if "counts" in cfg.sections:
        print("\n## Ops and host round trips per compress call, frames x T tokens of synthetic features\n")
        print(counts_table(run_counts(cfg)))


def run_stage_tables(cfg: BenchConfig) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        width, height = cfg.video_size
        clip = write_clip(str(Path(tmp) / "clip.mp4"), frames=96, width=width, height=height)
        for arch in cfg.archs:
            medians = run_stages(arch, cfg, clip)
            print(f"\n## Stages, {arch}, {cfg.frames} frames of a {width}x{height} H.264 clip, {cfg.new_tokens} "
                  f"decoded tokens\n{depth_note(arch, cfg)}\n")
            print(stage_tables(arch, cfg, medians))


def parse_args(argv: list[str] | None = None) -> BenchConfig:
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
    args = vars(parser.parse_args(argv))
    return BenchConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in args.items()})


if __name__ == "__main__":
    run(parse_args())
