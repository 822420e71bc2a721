"""The end-to-end benchmark's instruments and the script itself at a tiny setting (counts, never times)."""
from __future__ import annotations

import itertools
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_pipeline  # noqa: E402
from measure import LayerClock, PeakMemory, counted_flops, reset_cpu_peak, scale_depth  # noqa: E402

from llava.compression.counting import CountingMode  # noqa: E402

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


def test_vision_stages_are_the_models_pooled_features(tiny_bench: bench_pipeline.Bench) -> None:
    size = tiny_bench.spec.vision["image_size"]
    pixels = torch.randn(5, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        pooled, times = bench_pipeline.vision_stages(tiny_bench, pixels, frame_batch_size=2)
        expected = tiny_bench.model.pooled_features(pixels, frame_batch_size=2)
    assert torch.equal(pooled, expected)
    assert set(times) == {"tower", "proj+pool"}
    assert len(tiny_bench.tower_clock.take()) == 3  # one pass through the tower's layers per chunk of 2 of 5 frames


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


def _rows(text: str, heading: str) -> list[list[str]]:
    """Body cells of the first markdown table after `heading`."""
    lines = text[text.index(heading):].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    table = list(itertools.takewhile(lambda line: line.startswith("|"), lines[start:]))
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in table[2:]]


def test_script_runs_end_to_end(capsys: pytest.CaptureFixture[str]) -> None:
    cfg = bench_pipeline.parse_args(TINY_RUN)
    bench_pipeline.run(cfg)
    out = capsys.readouterr().out
    spec = bench_pipeline.ARCHITECTURES["tiny"]
    tokens = cfg.frames * bench_pipeline.tokens_per_frame_side(spec) ** 2  # F * T pooled tokens

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
