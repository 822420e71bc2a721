"""Serving throughput and time to first token at several retention ratios, side by side on one vLLM engine.

One in-process engine with the llava_scissor plugin; each ratio is a per-request `mm_processor_kwargs`, so every
ratio runs on the same engine and weights. Per repeat the ratios take turns (interleaved, so machine noise hits all
of them alike): a burst of --requests requests goes in at once through `LLM.generate`. Every request's frames differ
in one pixel, so vLLM's multimodal caches cannot share one encoder output across requests.

Columns: video tokens per request (K) and prompt tokens; req/s = requests / wall time of the burst; TTFT = vLLM's
own per-request first-token latency (arrival to first token), median and p90 over all requests of all repeats;
the ratio columns compare with r = 1.0 (stock layout, no compression) from the same run. SCC ms: `compress` alone
on one video's pooled features inside the engine's model (median of --repeats), to show its share of the TTFT.

CPU (default): a tiny random vLLM-ready checkpoint at the real geometry (384 px, patch 14: 196 tokens per frame,
so K and prompt lengths are the real ones; widths are tiny, so the costs are not):
    VLLM_CPU_KVCACHE_SPACE=2 .venv-vllm/bin/python benchmarks/bench_serving.py
GPU (the figures that matter; vLLM from `pip install -e ".[serve]"`):
    python benchmarks/bench_serving.py --model llava-hf/llava-onevision-qwen2-0.5b-ov-hf --dtype bfloat16 \
        --requests 64 --videos clip1.mp4 clip2.mp4 ...

The table is printed and written to benchmarks/results/serving-<model>-<dtype>-<device>.md (model: `tiny-random`
or the checkpoint's last path part), stamped with the commit, date, machine and command (llava.testing.results).
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import tempfile
from pathlib import Path

import numpy as np
import torch

from llava.compression.timing import timed_call
from llava.testing.results import RESULTS_DIR, Report

ROOT = Path(__file__).resolve().parent.parent
QUESTION = "Describe what happens in this video."


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="llava-hf checkpoint (default: a tiny random one at the real geometry)")
    parser.add_argument("--videos", nargs="+", default=[str(ROOT / "assets" / "demo.mp4")])
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--ratios", type=float, nargs="+", default=[1.0, 0.35, 0.1])
    parser.add_argument("--requests", type=int, default=8, help="requests per burst")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--max-model-len", type=int, default=8192)
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR, help="where the table's file goes")
    return parser.parse_args()


def tiny_checkpoint() -> str:
    from llava.testing.tiny_checkpoint import vllm_spec, write_tiny_checkpoint

    out = Path(tempfile.mkdtemp(prefix="bench_serving_"))
    return str(write_tiny_checkpoint(out, "hf", spec=vllm_spec(image_size=384, patch_size=14), processor_files=True))


def load_videos(paths: list[str], frames: int) -> list[np.ndarray]:
    from llava.video import load_video

    return [load_video(path, frames).frames for path in paths]  # each (F, H, W, 3) uint8


def prompt_text() -> str:
    from llava.conversation import conv_templates

    conv = conv_templates["qwen_2"].copy()
    conv.append_message(conv.roles[0], f"<video>\n{QUESTION}")
    conv.append_message(conv.roles[1], None)
    return conv.get_prompt()


def burst(videos: list[np.ndarray], count: int, ratio: float, start: int) -> list[dict]:
    """`count` requests cycling over the videos, each with a unique pixel so no two share a cache entry."""
    requests = []
    for i in range(count):
        frames = videos[i % len(videos)].copy()
        frames[0, 0, 0, :2] = divmod((start + i) % 65536, 256)
        requests.append({"prompt": prompt_text(), "multi_modal_data": {"video": frames},
                         "mm_processor_kwargs": {"retention_ratio": ratio}})
    return requests


def scc_ms(llm, frames: np.ndarray, ratio: float, repeats: int) -> float:
    """Median ms of `compress` on one video's pooled features, computed by the engine's own model (in-process)."""
    from llava.compression import compress
    from llava.model.image_processor import SiglipVideoProcessor
    from llava.serving.budget import VideoBudget

    config = VideoBudget(ratio=ratio).compression()
    if config is None:
        return 0.0
    size = llm.llm_engine.model_config.hf_config.vision_config.image_size
    pixels = SiglipVideoProcessor(size).preprocess(frames)["pixel_values"]  # (F, 3, S, S)

    def run(model) -> float:
        param = next(model.parameters())
        with torch.no_grad():
            pooled = model._video_pixels_to_features(model.vision_tower, pixels.to(param.device, param.dtype))
            times = [timed_call(param.device, lambda: compress(pooled, config))[1]
                     for _ in range(repeats + 1)]  # the first is a warm-up
        return statistics.median(times[1:])

    return llm.apply_model(run)[0]


def main() -> None:
    args = parse_args()
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    from vllm import LLM, SamplingParams

    from llava.serving.plugin import ARCHITECTURE

    model = args.model or tiny_checkpoint()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # where vLLM runs the engine
    videos = load_videos(args.videos, args.frames)
    llm = LLM(model=model, hf_overrides={"architectures": [ARCHITECTURE]}, dtype=args.dtype,
              max_model_len=args.max_model_len, enable_prefix_caching=False, mm_processor_cache_gb=0,
              disable_log_stats=False, seed=0, enforce_eager=args.dtype == "float32",
              limit_mm_per_prompt={"image": 0, "video": {"count": 1, "num_frames": args.frames}})
    params = SamplingParams(max_tokens=args.max_tokens, temperature=0.0, ignore_eos=True)
    video_token = llm.llm_engine.model_config.hf_config.video_token_index
    llm.generate(burst(videos, 2, args.ratios[-1], 65534), params, use_tqdm=False)  # warm-up

    rates: dict[float, list[float]] = {r: [] for r in args.ratios}
    ttft: dict[float, list[float]] = {r: [] for r in args.ratios}
    counts: dict[float, tuple[int, int]] = {}
    serial = 0
    for _ in range(args.repeats):
        for ratio in args.ratios:
            requests = burst(videos, args.requests, ratio, serial)
            serial += args.requests
            outputs, ms = timed_call(device, lambda r=requests: llm.generate(r, params, use_tqdm=False))
            rates[ratio].append(len(requests) / (ms / 1000.0))
            ttft[ratio] += [out.metrics.first_token_latency * 1000 for out in outputs]
            ids = outputs[0].prompt_token_ids
            counts[ratio] = (ids.count(video_token), len(ids))

    base = args.ratios[0]
    report = Report("Serving throughput and time to first token", device, args.dtype, echo=print)
    report.add(f"model {model}; {len(videos)} video(s), {args.frames} frames; {args.requests} requests per burst, "
               f"{args.repeats} repeats, {args.max_tokens} new tokens, {args.dtype}\n")
    scc = {ratio: scc_ms(llm, videos[0], ratio, args.repeats) for ratio in args.ratios}
    report.add(f"| r | video tokens | prompt tokens | req/s | TTFT median ms | TTFT p90 ms | SCC ms | req/s vs "
               f"r={base} | TTFT vs r={base} |")
    report.add("|---|---|---|---|---|---|---|---|---|")
    for ratio in args.ratios:
        rate, median = statistics.median(rates[ratio]), statistics.median(ttft[ratio])
        p90 = float(np.percentile(ttft[ratio], 90))
        rate_x = rate / statistics.median(rates[base])
        ttft_x = median / statistics.median(ttft[base])
        report.add(f"| {ratio:g} | {counts[ratio][0]} | {counts[ratio][1]} | {rate:.2f} | {median:.0f} | {p90:.0f} "
                   f"| {scc[ratio]:.0f} | {rate_x:.2f} | {ttft_x:.2f} |")
    name = "tiny-random" if args.model is None else re.sub(r"[^A-Za-z0-9.]+", "-", Path(args.model).name).lower()
    print(f"wrote {report.write(args.results_dir, f'serving-{name}')}")


if __name__ == "__main__":
    main()
