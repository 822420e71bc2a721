"""The end-to-end benchmark's instruments and the script itself at a tiny setting (counts, never times)."""
from __future__ import annotations

import itertools
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from llava.compression.pllava import ratio_shape
from llava.config_types import METHOD_SPECS
from llava.testing import methods_bench
from llava.testing import pipeline_bench as bench_pipeline
from llava.testing.architectures import model_config
from llava.testing.counting import CountingMode
from llava.testing.instruments import LayerClock, PeakMemory, SpanClock, counted_flops, reset_cpu_peak, scale_depth
from llava.testing.synthetic import prompt_ids

TINY_RUN = ["--archs", "tiny", "--memory-arch", "tiny", "--frames", "3", "--memory-frames", "2", "4", "--repeats", "1",
            "--video-size", "64", "48", "--new-tokens", "2", "--retentions", "1.0", "0.5", "0.1",
            "--count-frames", "2", "3"]


@pytest.mark.parametrize("reads", [0, 1, 5])
def test_counter_counts_each_host_read(reads: int) -> None:
    x = torch.arange(12.0)

    def work() -> None:
        y = x * 2 + 1  # device work only
        y @ y
        for i in range(reads):
            y[i].item()
            bool(y[i] > 3)
            y[y > i]  # boolean-mask indexing: a hidden nonzero
        torch.nonzero(y)
        torch.equal(y, x)
        torch.bincount(y.long())

    with CountingMode() as counter:
        work()
    assert counter.counts.syncs == 3 * reads + 3
    assert counter.counts.by_op["_local_scalar_dense"] == 2 * reads
    assert counter.counts.by_op["index"] == reads
    assert counter.counts.ops > counter.counts.syncs


def test_counter_ignores_value_free_ops() -> None:
    x = torch.randn(6, 4)
    with CountingMode() as counter:
        torch.repeat_interleave(x, 2, dim=0)
        x[torch.tensor([0, 2])]  # integer indexing: the output shape is known
        x.argmax(dim=1).sort()
    assert counter.counts.ops >= 3 and counter.counts.syncs == 0


@pytest.mark.skipif(not reset_cpu_peak(), reason="needs Linux's resettable resident-memory high-water mark")
def test_cpu_peak_memory_sees_a_phase_and_only_that_phase() -> None:
    device = torch.device("cpu")
    megabytes = 256
    with PeakMemory(device) as big:
        block = torch.ones(megabytes * 2**20 // 4)  # touched pages, freed before the phase ends
        del block
    with PeakMemory(device) as small:
        torch.ones(2**20 // 4)
    assert big.mb >= 0.9 * megabytes
    assert small.mb < megabytes / 4  # the first phase's peak was reset


def test_scale_depth_keeps_the_fixed_part() -> None:
    assert scale_depth(10.0, 4.0, used=2, real=2) == 10.0
    assert scale_depth(10.0, 4.0, used=1, real=3) == pytest.approx(6.0 + 3 * 4.0)


def test_counted_flops_are_the_matmuls_and_attention_with_the_layer_part_apart() -> None:
    torch.manual_seed(0)
    head, layers = torch.nn.Linear(8, 16), torch.nn.ModuleList([torch.nn.Linear(16, 16) for _ in range(3)])
    x = torch.randn(5, 8)
    q, k, v = torch.randn(2, 3, 6, 4), torch.randn(2, 3, 9, 4), torch.randn(2, 3, 9, 4)

    def forward() -> torch.Tensor:
        h = head(x)
        for layer in layers:
            h = layer(h)
        torch.nn.functional.scaled_dot_product_attention(q, k, v)
        return h

    out, total, inside = counted_flops(forward, layers)
    stack = 3 * 2 * 5 * 16 * 16
    attention = 2 * (2 * 2 * 3 * 6 * 9 * 4)  # q @ k^T and the weighted sum of v, over every (query, key) pair
    assert inside == stack
    assert total == 2 * 5 * 8 * 16 + stack + attention
    assert out.shape == (5, 16)  # fn's own result comes back with its count
    assert counted_flops(forward)[1:] == (total, 0.0)


@pytest.fixture(scope="module")
def tiny_bench() -> bench_pipeline.Bench:
    return bench_pipeline.build_bench("tiny", bench_pipeline.BenchConfig(archs=("tiny",), frames=3))


@pytest.mark.parametrize("stride", [2, 3])
def test_vision_stages_are_the_models_pooled_features(tiny_bench: bench_pipeline.Bench, stride: int) -> None:
    size = tiny_bench.spec.vision["image_size"]
    pixels = torch.randn(5, 3, size, size, generator=torch.Generator().manual_seed(0))
    config = tiny_bench.model.config
    config.mm_spatial_pool_stride = stride  # as lmms-eval sets it: the model reads it at its next call
    try:
        with torch.inference_mode():
            pooled, times = bench_pipeline.vision_stages(tiny_bench, pixels, frame_batch_size=2)
            left = tiny_bench.tower_span.take(), tiny_bench.tower_clock.take()  # vision_stages took its spans
            expected = tiny_bench.model.pooled_features(pixels, frame_batch_size=2)
        side = bench_pipeline.pooled_side(config)
    finally:
        config.mm_spatial_pool_stride = 2
    assert torch.equal(pooled, expected)
    assert pooled.shape[1] == side**2 == {2: 16, 3: 9}[stride]  # 8x8 patches of the tiny tower: 4x4, 3x3
    assert set(times) == {"tower", "proj+pool"} and left == ([], [])
    assert len(tiny_bench.tower_span.take()) == 3  # one span per chunk of 2 of 5 frames
    assert len(tiny_bench.tower_clock.take()) == 3


def test_span_clock_one_entry_per_pass_from_first_to_last() -> None:
    first, middle, last = torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2)
    clock = SpanClock(first, last, torch.device("cpu"))
    for _ in range(3):
        last(middle(first(torch.ones(1, 4))))
    middle(torch.ones(1, 4))  # outside the span: no entry
    spans = clock.take()
    clock.remove()
    last(middle(first(torch.ones(1, 4))))
    assert len(spans) == 3 and all(ms >= 0.0 for ms in spans)
    assert clock.take() == []  # removed hooks record nothing


@pytest.mark.parametrize("new_tokens", [1, 3])
def test_llm_stages_one_forward_per_token(tiny_bench: bench_pipeline.Bench, new_tokens: int) -> None:
    clock = LayerClock(tiny_bench.model.language_model.model.layers, tiny_bench.device)
    video = tiny_bench.model.compress_features(tiny_bench.features, bench_pipeline.BenchConfig().compression(0.5))
    with torch.inference_mode():
        stages = bench_pipeline.llm_stages(tiny_bench, video, new_tokens)
    assert len(clock.take()) == new_tokens + 1  # prefill + one decode step per further token
    clock.remove()
    assert stages["llm tokens"] == bench_pipeline.PROMPT_LENGTH - 1 + video.tokens.shape[0]


def test_stage_flops_scale_to_the_real_depth(tiny_bench: bench_pipeline.Bench) -> None:
    full = bench_pipeline.build_bench("tiny", bench_pipeline.BenchConfig(archs=("tiny",), frames=3, full_depth=True))
    assert len(tiny_bench.model.language_model.model.layers) < len(full.model.language_model.model.layers)
    cfg = bench_pipeline.BenchConfig()
    with torch.inference_mode():
        reduced = {r: bench_pipeline.stage_flops(tiny_bench, cfg.compression(r)) for r in (1.0, 0.5, 0.1)}
        real = {r: bench_pipeline.stage_flops(full, cfg.compression(r)) for r in (1.0, 0.5, 0.1)}
    for r in reduced:  # each layer costs the same, so scaling by layer count is exact
        assert reduced[r] == pytest.approx(real[r], rel=1e-12)
    assert reduced[1.0]["compression GFLOP"] == 0.0 < reduced[0.1]["compression GFLOP"]
    prefill = [reduced[r]["prefill GFLOP"] for r in (1.0, 0.5, 0.1)]
    assert prefill[0] > prefill[1] > prefill[2]  # fewer LLM tokens, fewer FLOPs


def test_bad_settings_name_the_problem() -> None:
    with pytest.raises(ValueError, match="unknown architectures.*valid"):
        bench_pipeline.BenchConfig(archs=("13b",))
    with pytest.raises(ValueError, match=r"retentions must be in \(0, 1\]"):
        bench_pipeline.parse_args(["--retentions", "1.0", "0"])
    with pytest.raises(ValueError, match="placeholder_at"):
        prompt_ids(1, 4, 10, placeholder_at=4)


def _rows(text: str, heading: str) -> list[list[str]]:
    """Body cells of the first markdown table after `heading`."""
    lines = text[text.index(heading):].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    table = list(itertools.takewhile(lambda line: line.startswith("|"), lines[start:]))
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in table[2:]]


def test_script_runs_end_to_end(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    cfg, results_dir = bench_pipeline.parse_args(TINY_RUN + ["--results-dir", str(tmp_path)])
    written = bench_pipeline.run(cfg, results_dir, echo=print)
    out = capsys.readouterr().out
    tokens = cfg.frames * bench_pipeline.pooled_side(model_config("tiny")) ** 2  # F * T pooled tokens
    assert sorted(path.name for path in written) == sorted(path.name for path in tmp_path.iterdir()) == [
        "pipeline-counts-float32-cpu.md", "pipeline-memory-tiny-r0.1-float32-cpu.md",
        "pipeline-stages-tiny-float32-cpu.md"]
    for path in written:  # each file: its stamp, then the table as printed
        text = path.read_text()
        assert text.startswith("# ") and "- command: `python " in text
        assert _rows(text, "|") == _rows(out, text.splitlines()[0][2:])

    stages = _rows(out, "## Stages, tiny")
    assert [row[0] for row in stages] == ["100% (none)", "50%", "10%"]
    kept = [tokens + 1] + [max(1, round(r * tokens)) for r in cfg.retentions[1:]]  # 100%: one newline token
    assert [int(row[1]) for row in stages] == [bench_pipeline.PROMPT_LENGTH - 1 + k for k in kept]
    assert float(stages[0][10]) == 1.0 and float(stages[0][11]) == 1.0  # speed-ups against itself
    assert "compression % of prefill FLOPs |" in out and float(stages[0][16]) == 0.0  # 100%: no compression

    memory = _rows(out, "## Memory against frames")
    assert [int(row[0]) for row in memory] == list(cfg.memory_frames)
    assert "peak(4) / (2 x peak(2))" in out

    counts = _rows(out, "## Ops and host round trips")
    assert [(int(row[0]), row[2]) for row in counts] == [(2, "tau 0.9"), (2, "r 0.1"), (3, "tau 0.9"), (3, "r 0.1")]
    assert all(int(row[4]) > int(row[5]) >= 0 for row in counts)  # ops dispatched, of which round trips


def test_methods_section_a_row_per_method_and_ratio(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """Every registered method at 50 / 35 / 10% after the 100% row (DyCoke also with its decode stage), with the
    token counts its budget gives; a budget the method cannot reach (DyCoke at 8 frames keeps at least 3 whole
    frames, 37.5%) shows "-" and why. FastV (K = 1 of the tiny LLM's 2 layers) takes all 128 video tokens in and
    keeps round(r x 128) from layer 1 on; per layer (128 + kept) / 2."""
    cfg, results_dir = bench_pipeline.parse_args(["--archs", "tiny", "--frames", "8", "--repeats", "1",
                                                  "--video-size", "64", "48", "--sections", "methods",
                                                  "--in-llm-layer", "1", "--new-tokens", "2",
                                                  "--results-dir", str(tmp_path)])
    written = methods_bench.run(cfg, results_dir, echo=print)
    assert [path.name for path in written] == ["pipeline-methods-tiny-float32-cpu.md"]
    rows = _rows(capsys.readouterr().out, "## Methods side by side, tiny")
    tokens = 8 * 16  # F x T of the tiny tower (8 x 8 patches pooled to 4 x 4)
    expected = [("none", "100%")]
    for method, spec in METHOD_SPECS.items():
        expected += [(m, f"{100 * r:g}%") for m in (method, methods_bench.TWO_STAGE) if spec.budget != "none"
                     and (m == method or method == "dycoke") for r in cfg.method_retentions]
    assert [(row[0], row[1]) for row in rows] == expected
    for row in rows:
        method, ratio = row[0], float(row[1].rstrip("%")) / 100
        if method in ("dycoke", methods_bench.TWO_STAGE) and ratio < 0.375:
            assert row[2:-1] == ["-"] * 17 and "dycoke cannot keep fewer than 48 of 128 tokens" in row[-1]
            continue
        assert row[-1] == "" and int(row[2]) == _expected_tokens(method, ratio, tokens)
        newline = 1 if method in ("none", "fastv") else 0  # one newline token after an uncompressed video
        assert int(row[3]) == bench_pipeline.PROMPT_LENGTH - 1 + int(row[2]) + newline
        if method == "fastv":
            kept = round(ratio * tokens)
            assert row[4] == "1" and float(row[5]) == kept
            assert float(row[6]) == pytest.approx((tokens + kept) / 2, abs=0.05)
        elif method == methods_bench.TWO_STAGE:  # decode-stage steps attend to int(63 x 0.2) = 12 video tokens
            assert row[4] == "1" and 12 <= float(row[5]) <= 63
            assert float(row[6]) == pytest.approx((63 + float(row[5])) / 2, abs=0.05)  # printed with one decimal
        else:
            assert row[4] == "-" and float(row[5]) == float(row[6]) == int(row[2])
    assert (tmp_path / written[0].name).read_text().count("\n| ") == len(expected) + 1  # header + one per cell


def test_in_llm_rows_scale_the_layers_from_k_on() -> None:
    """FastV's prefill FLOPs on K + 1 layers, split at K and scaled, equal those of the real depth: layers below K
    see every token, the one from K on stands for every later layer (they all see the kept tokens)."""
    def bench(layers: int) -> bench_pipeline.Bench:
        return bench_pipeline.build_bench("tiny", bench_pipeline.BenchConfig(archs=("tiny",), frames=3,
                                                                             text_layers=layers))

    deep, reduced = bench(4), bench(2)  # a 4-layer LLM, and its stand-in with K + 1 = 2 layers
    config = methods_bench.ratio_config("fastv", 0.25, layer=1)
    inputs = methods_bench.MethodInputs(deep.features, None)
    with torch.inference_mode():
        at_real = methods_bench.cell_flops(deep, replace(methods_bench.depth_split(deep, 0), real=4), config, inputs)
        split = replace(methods_bench.depth_split(reduced, 1), real=4)
        scaled = methods_bench.cell_flops(reduced, split, config, inputs)
        by_count = methods_bench.cell_flops(reduced, replace(methods_bench.depth_split(reduced, 0), real=4), config,
                                            inputs)
    assert split.scale(10.0, 4.0) == 10.0 + 4.0 * 2  # layer 1 stands for layers 1, 2 and 3
    assert scaled["prefill GFLOP"] == pytest.approx(at_real["prefill GFLOP"], rel=1e-12)
    assert by_count["prefill GFLOP"] > 1.05 * at_real["prefill GFLOP"]  # scaling every layer alike overcounts
    real = bench_pipeline.BenchConfig(archs=("tiny",), frames=3, full_depth=True)
    groups, skipped = methods_bench.bench_groups(methods_bench.method_cells((0.5,)), real, "tiny")
    assert len(groups) == 1 and skipped == {}  # at the real depth one bench measures every cell
    cfg = bench_pipeline.BenchConfig(archs=("tiny",), in_llm_layer=2)
    groups, skipped = methods_bench.bench_groups(methods_bench.method_cells((0.5,)), cfg, "tiny")
    assert set(skipped) == {("fastv", 0.5), (methods_bench.TWO_STAGE, 0.5)} and len(groups) == 1
    assert "past the LLM's 2 layers" in skipped[("fastv", 0.5)]


def _expected_tokens(method: str, ratio: float, tokens: int) -> int:
    """What each budget gives on 8 frames of 16 tokens (4 x 4 pooled from 8 x 8)."""
    if method in ("none", "fastv"):  # FastV prunes inside the LLM: every token enters it
        return tokens
    k = max(1, round(ratio * tokens))
    if method == "pllava":
        return math.prod(ratio_shape(8, 8, k))
    if method in ("dycoke", methods_bench.TWO_STAGE):  # frames 1, 3, 5, 7 (pairs), 2 (of four) pruned; 0, 4, 6 whole
        assert ratio == 0.5
        return 3 * 16 + 5 * 3  # the 5 pruned frames keep 3 each: 63 is the nearest count to 64
    return k
