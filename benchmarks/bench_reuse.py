"""Compress once, ask many times: the cost of N questions on one video, with and without reusing its encoding.

SCC does not look at the text, so a video encoded and compressed once (`model.encode_video`) answers any number
of questions exactly (`model.generate(ids, videos=[encoded])`). Video-MME asks three questions per video. Columns:
- one question: encode + generate, the unit.
- reuse: encode once, then generate per question.
- no reuse: `generate(images=[pixels], modalities=["video"])` per question (vision tower and compression every time).
Times are medians over interleaved repeats (the three variants alternate within each repeat), so machine noise
hits them alike; the ratios are the result.

The model is a random-weight LLaVA-OneVision at the real widths with reduced depth (both the tower and the LLM
keep the same fraction of their layers, so their relative cost stays that of the real model).

The table is printed and written to benchmarks/results/reuse-<arch>-<dtype>-<device>.md, stamped with the commit,
date, machine and command (llava.testing.results).

Run: python benchmarks/bench_reuse.py [--arch 0.5b] [--frames 8] [--questions 3] [--depth-fraction 0.15]
"""
from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch

from llava.compression import CompressionConfig
from llava.compression.timing import timed_call
from llava.testing.architectures import ARCHITECTURES, random_model
from llava.testing.results import RESULTS_DIR, Report
from llava.testing.synthetic import prompt_ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", choices=sorted(ARCHITECTURES), default="0.5b")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--questions", type=int, default=3)
    parser.add_argument("--depth-fraction", type=float, default=0.15, help="fraction of the real layers kept")
    parser.add_argument("--retention-ratio", type=float, default=0.1)
    parser.add_argument("--max-new-tokens", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR, help="where the table's file goes")
    args = parser.parse_args()

    spec = ARCHITECTURES[args.arch]
    vision_layers = max(1, round(args.depth_fraction * spec.vision_layers))
    text_layers = max(1, round(args.depth_fraction * spec.num_hidden_layers))
    device = torch.device(args.device)
    model = random_model(args.arch, vision_layers, text_layers, getattr(torch, args.dtype), device=device)
    compression = CompressionConfig(method="scc", retention_ratio=args.retention_ratio)
    size = spec.vision["image_size"]
    pixels = torch.randn(args.frames, 3, size, size, generator=torch.Generator().manual_seed(1))  # (F, 3, S, S)
    questions = prompt_ids(args.questions, 40, spec.vocab_size)
    generate = dict(do_sample=False, max_new_tokens=args.max_new_tokens, min_new_tokens=args.max_new_tokens,
                    eos_token_id=None, pad_token_id=0)

    def one() -> None:
        model.generate(questions[0], videos=[model.encode_video(pixels, compression)], **generate)

    def reuse() -> None:
        video = model.encode_video(pixels, compression)
        for ids in questions:
            model.generate(ids, videos=[video], **generate)

    def no_reuse() -> None:
        for ids in questions:
            model.generate(ids, images=[pixels], modalities=["video"], compression=compression, **generate)

    variants = {"one question": one, f"{args.questions} questions, reuse": reuse,
                f"{args.questions} questions, no reuse": no_reuse}
    with torch.inference_mode():
        one()  # warm-up
        times: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(args.repeats):
            for name, fn in variants.items():
                times[name].append(timed_call(device, fn)[1])
    medians = {name: statistics.median(ms) for name, ms in times.items()}
    unit = medians["one question"]
    report = Report(f"Compress once, ask many times ({args.arch})", device, args.dtype, echo=print)
    report.add(f"{args.arch} widths, {vision_layers}/{spec.vision_layers} tower layers, {text_layers}/"
               f"{spec.num_hidden_layers} LLM layers, {args.frames} frames, r = {args.retention_ratio}, "
               f"{args.max_new_tokens} new tokens, {args.dtype} on {device}; medians of {args.repeats} interleaved "
               "repeats\n")
    report.add("| variant | ms | / one question |")
    report.add("|---|---|---|")
    for name, ms in medians.items():
        report.add(f"| {name} | {ms:.0f} | {ms / unit:.2f} |")
    print(f"wrote {report.write(args.results_dir, f'reuse-{args.arch}')}")


if __name__ == "__main__":
    main()
