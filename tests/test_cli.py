"""The command line's edges (`llava.infer`): `--help` and bad flags answer before torch is imported, an error
names the flag that set the bad value, and text output cannot carry terminal control characters."""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llava import infer, runtime
from llava.infer import main, printable
from llava.runtime import Answer, InferenceReport

REPO = Path(__file__).resolve().parent.parent
# `python -m llava.infer ARGS`, then the heavy modules it imported (a count, not a timing) as the last stderr line
PROBE = """
import json, runpy, sys
try:
    runpy.run_module("llava.infer", run_name="__main__", alter_sys=True)
    code = 0
except SystemExit as exit:
    code = exit.code
sys.stderr.write("\\n" + json.dumps({"code": code, "heavy": [m for m in ("torch", "transformers") if m in sys.modules]})
                 + "\\n")
"""


def probe(*args: str) -> tuple[dict, str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, env=env,
                            timeout=120)
    *err, last = result.stderr.strip().splitlines()
    return json.loads(last), result.stdout, "\n".join(err)


@pytest.mark.parametrize("args, code, needle", [
    (["--help"], 0, "--retention-ratio"),
    (["--no-such-flag"], 2, "unrecognized arguments: --no-such-flag"),
    (["--method", "magic"], 2, "invalid choice: 'magic'"),
    (["--retention-ratio", "2"], 2, "--retention-ratio: compression.retention_ratio must be in (0, 1], got 2.0"),
    (["--frames", "0", "--config", "llava-ov-7b"], 2, "--frames: video.frames must be an int in [1, 1024]"),
])
def test_help_and_bad_flags_answer_without_importing_torch(args: list[str], code: int, needle: str) -> None:
    outcome, out, err = probe(*args)
    assert outcome == {"code": code, "heavy": []}, err
    assert needle in out + err


def test_config_errors_name_the_flag_that_set_the_value(capsys: pytest.CaptureFixture) -> None:
    assert main(["--retention-ratio", "2"]) == 2
    assert capsys.readouterr().err.startswith(
        "error: --retention-ratio: compression.retention_ratio must be in (0, 1], got 2.0")
    assert main(["--tau", "-3"]) == 2
    assert capsys.readouterr().err.startswith("error: --tau: compression.tau must be in [-1, 1], got -3.0")
    assert main(["--max-new-tokens", "0"]) == 2
    assert capsys.readouterr().err.startswith("error: --max-new-tokens: generation.max_new_tokens must be")


def test_a_value_from_the_config_file_names_no_flag(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("compression:\n  method: scc\n  retention_ratio: 2\n")
    assert main(["--config", str(bad), "--frames", "8"]) == 2
    assert capsys.readouterr().err.startswith("error: compression.retention_ratio must be in (0, 1], got 2")


def test_flags_named_by_matches_whole_field_names() -> None:
    args = infer.build_parser().parse_args(["--tau", "0.5", "--frames", "4"])
    assert infer.flags_named_by("compression.tau must be in [-1, 1]", args) == ["--tau"]
    assert infer.flags_named_by("compression.tau_spatial is odd", args) == []
    assert infer.flags_named_by("model.video.frames is not a field", args) == []


def test_printable_escapes_control_characters_but_newline_and_tab() -> None:
    assert printable("a\tb\nc") == "a\tb\nc"
    assert printable("\x1b[2J\rok\x00\x7f\x9b") == "\\x1b[2J\\x0dok\\x00\\x7f\\x9b"
    assert printable("héllo · 视频") == "héllo · 视频"


def fake_report(answer: str, question: str) -> InferenceReport:
    return InferenceReport(
        answers=[Answer(question, answer, 3, 1.0, 2.0)], video="clip.mp4", model="m", checkpoint="ckpt",
        device="cpu", dtype="float32", frames=2, frames_requested=2, frame_indices=[0, 1], total_frames=2,
        repeated_frames=False, video_backend="pyav", video_note=None, tokens_per_frame=4, tokens_before=8,
        tokens_spatial=None, tokens_after=2, newline_tokens=0, retention=0.25, method="scc", tau_spatial=0.5,
        tau_temporal=0.5, timings_ms={name: 1.0 for name in runtime.STAGES}, load_ms=1.0, peak_memory_mb=1.0,
        peak_memory_kind="process_rss_peak", random_checkpoint=True, warning="random \x1b[31mcheckpoint",
    )


def test_text_output_escapes_what_the_model_generated(capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch,
                                                      tmp_path: Path) -> None:
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"")
    monkeypatch.setattr(runtime, "run_inference", lambda config, video, questions, visualize: fake_report(
        "red\x1b[0m square\x07\nnext line", questions[0]))
    assert main(["--video", str(video), "--question", "Q\x1b?"]) == 0
    out = capsys.readouterr()
    assert out.out.startswith("red\\x1b[0m square\\x07\nnext line\n\ncheckpoint   ckpt")
    assert "\x1b" not in out.out + out.err and "WARNING: random \\x1b[31mcheckpoint" in out.err
    assert main(["--video", str(video), "--question", "Q\x1b?", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)  # JSON escapes controls itself and keeps the text exact
    assert report["answers"][0] == {"question": "Q\x1b?", "answer": "red\x1b[0m square\x07\nnext line",
                                    "new_tokens": 3, "prefill_ms": 1.0, "generate_ms": 2.0}


def test_text_report_gives_tokens_per_layer_for_an_in_llm_method() -> None:
    report = fake_report("a", "q")
    assert "in the LLM" not in infer.format_report(report)  # a pre-LLM method: one count, the block's
    report = dataclasses.replace(report, method="fastv", llm_layers=28, prune_layer=3, video_tokens_llm_input=6272,
                                 video_tokens_after_prune=627, video_tokens_layer_mean=1231.8)
    line = next(x for x in infer.format_report(report).splitlines() if x.startswith("in the LLM"))
    assert "6272 video tokens in, 627 from layer 3 of 28 on, 1231.8 per layer" in line and "per question" in line
