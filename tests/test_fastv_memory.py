"""FastV's prefill memory: ours (sdpa, one recomputed row) never above the uncompressed prefill and far below an
eager-attention FastV that reads layer K-1's attention map; the measure, the baseline and the script that shows it.

Memory is `TensorPeak` (live tensor storages, from shapes only), so the bounds are exact on every run and machine.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from llava.testing import fastv_memory
from llava.testing.architectures import model_config
from llava.testing.fastv_memory import MemoryBenchConfig, TensorPeak, build_model, prompt_prefill, video_features
from llava.testing.synthetic import prompt_ids

ROOT = Path(__file__).resolve().parents[1]
FRAMES = 128  # x 16 tokens per frame at the tiny shape: 2,048 video tokens, so an [H, L, L] map dominates
CONFIG = MemoryBenchConfig(arch="tiny", frames=FRAMES, retention=0.1, fastv_layer=3, text_layers=4, repeats=1)


def _prefill_peak(variant: str) -> tuple[int, torch.Tensor, int, int]:
    """(tensor peak bytes, next-token logits [1, V], rows in layers K and up, LLM input tokens) of one variant."""
    model = build_model(CONFIG, fastv_memory.ATTENTION[variant])
    ids = prompt_ids(1, fastv_memory.PROMPT_LENGTH, model.config.text.vocab_size)[0]
    with torch.inference_mode():
        video = model.compress_features(video_features(model, FRAMES), CONFIG.compression(variant))
        with TensorPeak() as peak:
            logits, rows = prompt_prefill(model, ids, video, variant)
    return peak.peak, logits, rows, fastv_memory.PROMPT_LENGTH - 1 + video.tokens.shape[0]


@pytest.fixture(scope="module")
def peaks() -> dict[str, tuple[int, torch.Tensor, int, int]]:
    return {variant: _prefill_peak(variant) for variant in fastv_memory.VARIANTS}


def test_tensor_peak_counts_live_storages_once() -> None:
    weight = torch.zeros(4 * 1024, 256)  # 4 MiB from before: its views are not allocations
    with torch.inference_mode(), TensorPeak() as peak:
        weight.t(), weight.view(-1)
        a = torch.zeros(1024, 256)  # 1 MiB
        b = a + 1  # 1 MiB more
        view = b[:10]  # a view: no new storage
        b.add_(1), a.view(-1)  # in place, and a view of a tensor counted before
        del a, b
        assert peak.live == 2**20  # b's storage is alive through the view
        c = torch.zeros(2 * 1024, 256)  # 2 MiB
        del view
        assert peak.live == 2 * 2**20
        del c
    assert peak.live == 0 and peak.peak == 3 * 2**20 and peak.mb == 3.0


def test_fastv_peak_is_at_most_the_uncompressed_one_and_far_below_eager_fastv(peaks) -> None:
    none, fastv, eager = peaks["none"][0], peaks["fastv"][0], peaks["fastv-eager"][0]
    assert fastv <= none
    text = model_config("tiny").text
    length = peaks["none"][3]
    attention_map = text.num_attention_heads * length**2 * 4  # one layer's [H, L, L] probabilities in float32
    assert eager >= attention_map > 5 * none  # the map is what the eager baseline pays for
    assert peaks["scc"][0] < fastv  # SCC's prefill never sees the dropped tokens


def test_eager_baseline_differs_only_in_the_backend(peaks) -> None:
    _, ours, rows, length = peaks["fastv"]
    _, eager, eager_rows, _ = peaks["fastv-eager"]
    video = FRAMES * 16
    assert rows == eager_rows == length - video + round(0.1 * video)  # the same text rows and kept video rows
    torch.testing.assert_close(eager, ours, rtol=1e-4, atol=1e-4)
    assert peaks["none"][2] == length


def test_eager_baseline_refuses_a_model_without_attention_maps() -> None:
    model = build_model(MemoryBenchConfig(arch="tiny", frames=2, text_layers=4), "sdpa")
    ids = prompt_ids(1, fastv_memory.PROMPT_LENGTH, model.config.text.vocab_size)[0]
    video = model.compress_features(video_features(model, 2), CONFIG.compression("fastv-eager"))
    with torch.inference_mode(), pytest.raises(ValueError, match="eager"):
        prompt_prefill(model, ids, video, "fastv-eager")


def test_config_rejects_a_layer_the_model_lacks() -> None:
    with pytest.raises(ValueError, match="fastv_layer"):
        MemoryBenchConfig(text_layers=3, fastv_layer=3)


def test_script_help_parses() -> None:
    done = subprocess.run([sys.executable, "benchmarks/bench_fastv_memory.py", "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "--text-layers" in done.stdout and "fastv-eager" in done.stdout


def test_script_writes_its_table(tmp_path: Path) -> None:
    argv = ["benchmarks/bench_fastv_memory.py", "--arch", "tiny", "--frames", "4", "--text-layers", "4",
            "--repeats", "1", "--results-dir", str(tmp_path)]
    done = subprocess.run([sys.executable, *argv], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    text = (tmp_path / "fastv-memory-tiny-float32-cpu.md").read_text()
    rows = {cells[0]: cells for cells in (
        [c.strip() for c in line.split("|")[1:-1]] for line in text.splitlines() if line.startswith("| "))}
    assert [rows[label][1] for label in fastv_memory.LABELS.values()] == ["sdpa", "sdpa", "sdpa", "eager"]
    none, scc, fastv = (rows[fastv_memory.LABELS[v]] for v in ("none", "scc", "fastv"))
    assert none[3] == none[2] and scc[3] == scc[2]  # no row leaves inside the LLM
    assert int(fastv[2]) == int(none[2]) and int(fastv[3]) == int(none[2]) - 64 + round(0.1 * 64)
    assert none[11] == "1.00" and none[6] in ("1.00", "n/a")  # n/a: no resettable high-water mark here
    assert "- command: `python benchmarks/bench_fastv_memory.py --arch tiny" in text and none[0] in done.stdout
