"""The README's Python examples run as printed (on a tiny checkpoint instead of the hub id, offline)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def python_block(after_heading: str) -> str:
    section = README.split(after_heading, 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, f"no python block after {after_heading!r}"
    return match.group(1)


def test_model_example_answers_on_a_tiny_checkpoint(tiny_original_dir: Path, capsys: pytest.CaptureFixture) -> None:
    code = python_block("## Loading a model")
    assert "lmms-lab/llava-onevision-qwen2-0.5b-ov" in code
    code = code.replace('"lmms-lab/llava-onevision-qwen2-0.5b-ov"', repr(str(tiny_original_dir)))
    code = code.replace('"assets/demo.mp4"', repr(str(ROOT / "assets" / "demo.mp4")))
    exec(compile(code, "README.md", "exec"), {})
    assert capsys.readouterr().out.strip()  # the decoded answer (noise from random weights, but printed)


def test_compression_example_runs_and_keeps_what_it_says() -> None:
    namespace: dict = {}
    exec(compile(python_block("## Compressing features"), "README.md", "exec"), namespace)
    assert tuple(namespace["result"].tokens.shape) == (627, 896)
