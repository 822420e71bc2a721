"""The web demo's functions without a browser: the form's checks, the pictures, the pipeline on a tiny checkpoint
(the tower runs once for two settings; answers and counts equal the runtime's), the page's HTML, and the command
line's error paths. The page itself, in Chromium: tests/test_demo_browser.py.
"""
from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from llava.config_types import CompressionConfig
from llava.demo.inputs import (
    RATIO,
    TAU,
    DemoInputError,
    build_compression,
    check_video,
    parse_questions,
    parse_request,
    with_frames,
)
from llava.demo.picture import DROPPED, painted_frames
from llava.demo_clip import make_demo_clip
from llava.run_config import RunConfig, load_config
from llava.visualize import MAX_FRAMES, TILE

BASE = CompressionConfig(retention_ratio=0.1, seed=3, precision="input")
FRAMES = 6


# ---- the form ------------------------------------------------------------------------------------------------
def test_questions_are_one_per_line_and_blank_lines_are_skipped() -> None:
    assert parse_questions("What moves?\n\n  Where?  \n") == ["What moves?", "Where?"]
    with pytest.raises(DemoInputError, match="Questions: type at least one question"):
        parse_questions(" \n\n")


def test_frames_are_checked_by_the_run_config() -> None:
    assert with_frames(RunConfig(), 8.0).video.frames == 8
    with pytest.raises(DemoInputError, match=r"Frames: video.frames must be an int in \[1, 1024\], got 0"):
        with_frames(RunConfig(), 0)
    with pytest.raises(DemoInputError, match="Frames: "):
        with_frames(RunConfig(), 2.5)


def test_a_budget_becomes_the_compression_config_with_the_base_seed_and_precision() -> None:
    config = build_compression("A", BASE, "scc", TAU, 0.9)
    assert (config.method, config.tau, config.retention_ratio, config.seed, config.precision) == (
        "scc", 0.9, None, 3, "input")
    assert build_compression("B", BASE, "uniform", RATIO, 0.25).retention_ratio == 0.25
    assert build_compression("B", BASE, "none", RATIO, 0.25) == CompressionConfig(method="none", seed=3,
                                                                                  precision="input")


@pytest.mark.parametrize(("method", "kind", "value", "words"), [
    ("scc", RATIO, 1.5, r"Setting B: compression.retention_ratio must be in \(0, 1\], got 1.5"),
    ("scc", RATIO, 0.0, r"Setting B: compression.retention_ratio must be in \(0, 1\]"),
    ("uniform", TAU, 0.9, r"Setting B: compression.method 'uniform'.*tau=0.9"),
    ("scc", RATIO, None, r"Setting B: compression.method 'scc' needs exactly one of tau"),
    ("magic", RATIO, 0.1, r"Setting B: method must be one of \['scc'"),
])
def test_an_unreachable_budget_names_the_setting_and_the_rule(method: str, kind: str, value: float | None,
                                                               words: str) -> None:
    with pytest.raises(DemoInputError, match=words):
        build_compression("B", BASE, method, kind, value)


def test_the_video_must_be_given_exist_and_hold_bytes(tmp_path: Path) -> None:
    with pytest.raises(DemoInputError, match="Video: upload a video file, or press 'Use the demo clip'"):
        check_video(None)
    with pytest.raises(DemoInputError, match="not a file on the server"):
        check_video(tmp_path / "gone.mp4")
    (tmp_path / "empty.mp4").touch()
    with pytest.raises(DemoInputError, match=r"Video: empty.mp4 is empty \(0 bytes\)"):
        check_video(tmp_path / "empty.mp4")


# ---- pictures ------------------------------------------------------------------------------------------------
def test_pictures_paint_kept_tokens_and_darken_dropped_patches() -> None:
    frames = np.full((2, 20, 20, 3), 200, dtype=np.uint8)
    assignment = np.array([[0, 0, 1, 1], [0, -1, -1, 1]])  # frame 1 drops its two middle patches
    (first, caption0), (second, caption1) = painted_frames(frames, assignment, [0, 9], tile=8)
    assert first.size == second.size == (8, 8)
    assert caption0 == "video frame 0: 2 tokens" and caption1 == "video frame 9: 2 tokens, 2 patches dropped"
    dropped_pixel = np.asarray(second)[5, 1]  # bottom-left patch of a 2 x 2 grid: assignment index 2, dropped
    kept_pixel = np.asarray(first)[5, 1]
    assert dropped_pixel.sum() < kept_pixel.sum() and dropped_pixel.tolist() != list(DROPPED)  # frame shows through


def test_pictures_show_at_most_the_visualizers_frame_count() -> None:
    frames = np.zeros((20, 8, 8, 3), dtype=np.uint8)
    pictures = painted_frames(frames, np.zeros((20, 4), dtype=np.int64), list(range(0, 40, 2)))
    assert len(pictures) == MAX_FRAMES and pictures[0][0].size == (TILE, TILE)
    with pytest.raises(ValueError, match="one assignment row and one video index per frame"):
        painted_frames(frames, np.zeros((19, 4), dtype=np.int64), list(range(20)))


# ---- the pipeline on a tiny checkpoint -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def demo_config(tiny_original_dir: Path) -> RunConfig:
    return load_config(None, {"model.path": str(tiny_original_dir), "model.device": "cpu", "video.frames": FRAMES,
                              "compression.retention_ratio": 0.1, "generation.max_new_tokens": 6})


@pytest.fixture(scope="module")
def engine(demo_config: RunConfig):
    from llava.demo.engine import DemoEngine

    return DemoEngine.load(demo_config)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_demo_clip(tmp_path_factory.mktemp("demo_clip") / "clip.mp4", num_frames=16)


def _request(engine, clip: Path, questions: str, *settings: tuple[str, str, str, float | None]):
    return parse_request(engine.config, engine.base_compression, clip, FRAMES, questions, list(settings))


def test_two_settings_share_one_tower_pass_and_answer_as_the_runtime_does(engine, clip: Path, demo_config: RunConfig,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from llava.runtime import run_inference

    model, calls = engine.loaded.model, {"visual_inputs": 0, "compress_features": 0}
    for name in calls:
        original = getattr(model, name)

        def counted(*args, _original=original, _name=name, **kwargs):
            calls[_name] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(model, name, counted)
    request = _request(engine, clip, "What moves?\nWhere?", ("A", "scc", RATIO, 0.1), ("B", "uniform", RATIO, 0.25))
    stages = [run.stage for run in engine.run(request)]
    assert calls == {"visual_inputs": 1, "compress_features": 2}
    assert list(dict.fromkeys(stages)) == ["decode", "vision", "compression", "generation", "done"]
    monkeypatch.undo()
    run = list(engine.run(request))[-1]
    for part in run.settings:
        config = dataclasses.replace(demo_config, compression=part.setting.compression)
        report = run_inference(config, clip, list(request.questions), loaded=engine.loaded)
        assert part.encoded.stats.tokens_out == report.tokens_after
        assert [a.answer for a in part.answers] == [a.answer for a in report.answers]
        assert [a.new_tokens for a in part.answers] == [a.new_tokens for a in report.answers]
        assert len(part.pictures) == FRAMES
    assert [p.encoded.stats.tokens_out for p in run.settings] == [round(0.1 * 16 * FRAMES), round(0.25 * 16 * FRAMES)]


def test_a_question_longer_than_the_context_fails_before_any_work(engine, clip: Path) -> None:
    request = _request(engine, clip, "why " * engine.context_length, ("A", "scc", RATIO, 0.1))
    runs = engine.run(request)
    with pytest.raises(DemoInputError, match=rf"Question 1 does not fit the model's context of "
                                             rf"{engine.context_length} positions.*shorten the question"):
        next(runs)


def test_a_file_that_is_not_a_video_names_the_file_not_the_server_path(engine, tmp_path: Path) -> None:
    notes = tmp_path / "notes.mp4"
    notes.write_text("not a video")
    runs = engine.run(_request(engine, notes, "What?", ("A", "scc", RATIO, 0.1)))
    assert next(runs).stage == "decode"
    with pytest.raises(DemoInputError, match="Video: notes.mp4: ") as caught:
        next(runs)
    assert str(tmp_path) not in str(caught.value)


# ---- the page ------------------------------------------------------------------------------------------------
def test_the_page_html_escapes_what_users_and_models_write(engine, clip: Path) -> None:
    from llava.demo.render import answers_text, error_html, setting_html, shared_html, status_html

    request = _request(engine, clip, "<b>bold?</b>", ("A", "scc", TAU, 0.9))
    runs = engine.run(request)
    first = next(runs)
    assert 'data-stage="decode"' in status_html(first) and "clip.mp4" in status_html(first)
    last = list(runs)[-1]
    part = last.settings[0]
    assert answers_text(part, request.questions).startswith("Q: <b>bold?</b>\nA: ")  # a textbox: shown as typed
    html = setting_html(part)
    assert 'data-field="setting">scc, tau 0.9<' in html and "SCC thresholds" in html
    assert f'data-field="tokens_after">{part.encoded.stats.tokens_out}<' in html
    assert f'data-field="frames">{FRAMES}<' in shared_html(last) and "peak memory" in shared_html(last)
    assert error_html("<script>x</script>") == ('<div class="demo-status demo-error" data-stage="error"><b>Error</b>: '
                                                "&lt;script&gt;x&lt;/script&gt;</div>")


gradio_missing = pytest.mark.skipif(importlib.util.find_spec("gradio") is None,
                                    reason="the demo extra (gradio) is not installed")


@gradio_missing
def test_respond_shows_a_bad_form_in_the_page_and_streams_a_good_one(engine, clip: Path) -> None:
    from llava.demo.app import respond

    bad = list(respond(engine, str(clip), FRAMES, "What?", False, "scc", RATIO, 1.5, "none", RATIO, None))
    assert len(bad) == 1 and "Setting A: compression.retention_ratio must be in (0, 1]" in bad[0][0]
    pages = list(respond(engine, str(clip), FRAMES, "What?", True, "scc", RATIO, 0.1, "none", RATIO, None))
    assert 'data-stage="done"' in pages[-1][0]
    pictures_a = [page[4] for page in pages if isinstance(page[4], list)]
    pictures_b = [page[7] for page in pages if isinstance(page[7], list)]
    assert len(pictures_a) == len(pictures_b) == 1  # sent once each, skipped while answers stream
    assert f'data-field="tokens_after">{16 * FRAMES}<' in pages[-1][6]  # B: none keeps every token


@gradio_missing
def test_the_app_builds_with_the_run_configs_defaults(engine) -> None:
    from llava.demo.app import build_app

    app = build_app(engine)
    values = {block.elem_id: getattr(block, "value", None) for block in app.blocks.values() if block.elem_id}
    assert values["frames"] == FRAMES and values["method-A"] == "scc" and values["value-A"] == 0.1


def test_the_command_line_reports_a_bad_config_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    from llava.demo.__main__ import main

    assert main(["--config", "no-such-config"]) == 2
    assert capsys.readouterr().err.startswith("error: run config no-such-config does not exist")


def test_the_command_line_says_how_to_install_gradio(monkeypatch: pytest.MonkeyPatch, tiny_original_dir: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from llava.demo import __main__ as cli

    real = importlib.util.find_spec
    monkeypatch.setattr(cli.importlib.util, "find_spec", lambda name: None if name == "gradio" else real(name))
    assert cli.main(["--model", str(tiny_original_dir)]) == 2
    assert "bash scripts/demo.sh" in capsys.readouterr().err
