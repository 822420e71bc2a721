"""The README's Python examples run as printed (on a tiny checkpoint instead of the hub id, offline)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def python_blocks(after_heading: str) -> list[str]:
    section = README.split(after_heading, 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert blocks, f"no python block after {after_heading!r}"
    return blocks


def python_block(after_heading: str) -> str:
    return python_blocks(after_heading)[0]


def test_model_examples_answer_on_a_tiny_checkpoint(tiny_original_dir: Path, capsys: pytest.CaptureFixture) -> None:
    load, reuse = python_blocks("## Loading a model")[:2]
    assert "lmms-lab/llava-onevision-qwen2-0.5b-ov" in load
    load = load.replace('"lmms-lab/llava-onevision-qwen2-0.5b-ov"', repr(str(tiny_original_dir)))
    load = load.replace('"assets/demo.mp4"', repr(str(ROOT / "assets" / "demo.mp4")))
    namespace: dict = {}
    exec(compile(load, "README.md", "exec"), namespace)
    assert capsys.readouterr().out.strip()  # the decoded answer (noise from random weights, but printed)
    exec(compile(reuse, "README.md", "exec"), namespace)
    out = capsys.readouterr().out
    frames, per_frame = namespace["pixels"].shape[0], 16  # the tiny tower pools to 4 x 4 tokens per frame
    assert out.startswith(f"{max(1, round(0.05 * frames * per_frame))} visual tokens\n")
    positions = [out.find(f"\n{q} ") for q in ("What is moving?", "What colour is the background?",
                                               "How many objects are there?")]
    assert -1 not in positions and positions == sorted(positions)  # each question printed with its answer


def test_compression_example_runs_and_keeps_what_it_says() -> None:
    namespace: dict = {}
    exec(compile(python_block("## Compressing features"), "README.md", "exec"), namespace)
    assert tuple(namespace["result"].tokens.shape) == (627, 896)
