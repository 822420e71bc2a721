"""Single-video inference (`llava.runtime`, the `llava.infer` CLI, `scripts/infer_video.sh`) on a tiny random
checkpoint, CPU only: exact token budgets, the report's stage timings and JSON schema, the merge picture, the
random-checkpoint warning, and one-line errors with exit code 2 for bad videos, checkpoints and configs."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from llava import infer
from llava.compression import CompressionConfig
from llava.constants import TINY_MARKER
from llava.conversation import video_prompt_ids
from llava.infer import build_parser, main, overrides_from_args
from llava.run_config import load_config, resolve_config_path
from llava.runtime import STAGES, answer_ids, frames_to_pixels, is_random_tiny, load_for_run, run_inference
from llava.visualize import draw_assignment_grid, grid_size, palette, shown_frames

REPO = Path(__file__).resolve().parent.parent
FRAMES = 4
TOKENS_PER_FRAME = 16  # tiny tower: 56 px / patch 8 = 7x7 patches -> bilinear 4x4
JSON_KEYS = {"answers", "frames", "frame_indices", "tokens_before", "tokens_after", "retention", "timings_ms",
             "peak_memory_mb", "peak_memory_kind", "tau_spatial", "tau_temporal", "config", "checkpoint", "device",
             "warning", "newline_tokens"}


def write_video(path: Path, n_frames: int = 12, size: tuple[int, int] = (48, 64)) -> Path:
    """A small mpeg4 clip: a bright square moving over a gradient (distinct regions for SCC to find)."""
    height, width = size
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=12)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(n_frames):
            frame = np.zeros((height, width, 3), dtype=np.uint8)
            frame[..., 2] = np.linspace(0, 255, width, dtype=np.uint8)[None, :]
            frame[8:24, 4 * i:4 * i + 16] = (255, 220, 0)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture(scope="session")
def video_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_video(tmp_path_factory.mktemp("video") / "clip.mp4")


def tiny_config(checkpoint: Path, **overrides: object):
    base = {"model.path": str(checkpoint), "model.device": "cpu", "video.frames": FRAMES,
            "generation.max_new_tokens": 4}
    return load_config(infer.DEFAULT_CONFIG, {**base, **overrides})


@pytest.fixture(scope="module")
def loaded(tiny_original_dir: Path):
    return load_for_run(tiny_config(tiny_original_dir))


def run_cli(args: list[str], cwd: Path, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run a command with this interpreter (PYTHON for the bash script), never whatever `python` is on PATH."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHON": sys.executable, **(env_extra or {})}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


# ---- the library call ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("ratio", [0.1, 0.35])
def test_run_inference_keeps_exactly_the_budget(loaded, tiny_original_dir: Path, video_path: Path,
                                                ratio: float) -> None:
    report = run_inference(tiny_config(tiny_original_dir, **{"compression.retention_ratio": ratio}), video_path,
                           "What moves?", loaded=loaded)
    n_tokens = FRAMES * TOKENS_PER_FRAME
    assert report.tokens_before == n_tokens
    assert report.tokens_after == max(1, round(ratio * n_tokens))
    assert report.retention == pytest.approx(report.tokens_after / n_tokens)
    assert report.frames == FRAMES and report.frame_indices == [0, 3, 7, 11]  # linspace(0, 11, 4) as ints
    assert report.newline_tokens == 0  # newline "auto" + compressing: none, as the paper ran
    assert set(report.timings_ms) == set(STAGES) and all(t > 0 for t in report.timings_ms.values())
    answer = report.answers[0]
    assert answer.question == "What moves?" and 1 <= answer.new_tokens <= 4
    assert report.peak_memory_kind == "process_rss_peak" and report.peak_memory_mb > 100  # weights + Python
    assert report.tau_spatial is not None and report.tau_temporal is not None
    stats = report.compression_stats  # the compressor's own stats, timed by the same call
    assert stats["tokens_out"] == report.tokens_after and stats["tokens_in"] == n_tokens
    assert 0 < stats["time_ms"] <= report.timings_ms["compression"]


def test_uncompressed_run_keeps_every_token_and_the_newline(loaded, tiny_original_dir: Path,
                                                            video_path: Path) -> None:
    uncompressed = tiny_config(tiny_original_dir, **{"compression.tau": None, "compression.method": "none"})
    report = run_inference(uncompressed, video_path, "Hi", loaded=loaded)
    assert report.tokens_after == report.tokens_before == FRAMES * TOKENS_PER_FRAME
    assert report.newline_tokens == 1  # the tiny checkpoint is spatial_unpad + one_token, like stock OneVision
    assert report.retention == 1.0


def test_cli_api_and_reuse_paths_give_identical_answers(loaded, tiny_original_dir: Path, video_path: Path) -> None:
    """run_inference (several questions, one encoding), `model.generate(images=...)` per question and the reuse
    path (`encode_video` once, `generate(videos=[...])` per question) give identical tokens and answers."""
    from llava.video import load_video

    compression = CompressionConfig(method="scc", retention_ratio=0.25)
    config = tiny_config(tiny_original_dir, **{"compression.retention_ratio": 0.25, "generation.max_new_tokens": 6})
    questions = ["Describe this video.", "What colour is the square?", "Where does it go?"]
    report = run_inference(config, video_path, questions, loaded=loaded)
    model, tokenizer = loaded.model, loaded.tokenizer
    pixels = frames_to_pixels(loaded.processor, load_video(video_path, FRAMES).frames)
    encoded = model.encode_video(pixels, compression)
    assert encoded.stats.tokens_out == report.tokens_after == round(0.25 * FRAMES * TOKENS_PER_FRAME)
    answers = []
    for question, got in zip(questions, report.answers, strict=True):
        ids = video_prompt_ids(question, tokenizer)[None]
        fresh = model.generate(ids, images=[pixels], modalities=["video"], compression=compression,
                               do_sample=False, max_new_tokens=6)
        reused = model.generate(ids, videos=[encoded], do_sample=False, max_new_tokens=6)
        assert torch.equal(fresh, reused)
        expected = answer_ids(fresh[0], model.stop_token_ids)
        assert got.question == question and got.new_tokens == len(expected)
        assert got.answer == tokenizer.decode(expected, skip_special_tokens=True).strip()
        answers.append(expected)
    assert answers[0] != answers[1]  # the answers depend on the question, so the equalities above can fail


def test_run_inference_follows_the_config_not_the_models_default(loaded, tiny_original_dir: Path,
                                                                 video_path: Path) -> None:
    """One loaded model, two budgets: compression is chosen per call and never stored on the model."""
    default = loaded.model.default_compression
    first = run_inference(tiny_config(tiny_original_dir, **{"compression.retention_ratio": 0.5}), video_path, "Hi",
                          loaded=loaded)
    second = run_inference(tiny_config(tiny_original_dir, **{"compression.retention_ratio": 0.1}), video_path, "Hi",
                           loaded=loaded)
    assert (first.tokens_after, second.tokens_after) == (32, 6)
    assert loaded.model.default_compression is default


def test_questions_from_flags_and_file(tmp_path: Path) -> None:
    parse = build_parser().parse_args
    questions = tmp_path / "q.txt"
    questions.write_text("Who?\n\n  Where?  \n")
    assert infer.read_questions(parse(["--question", "A?", "--question", "B?", "--questions-file", str(questions)])) \
        == ["A?", "B?", "Who?", "Where?"]
    assert infer.read_questions(parse([])) == [infer.DEFAULT_QUESTION]
    (tmp_path / "empty.txt").write_text("\n \n")
    with pytest.raises(ValueError, match="holds no question"):
        infer.read_questions(parse(["--questions-file", str(tmp_path / "empty.txt")]))


def test_short_video_is_noted(loaded, tiny_original_dir: Path, video_path: Path) -> None:
    report = run_inference(tiny_config(tiny_original_dir, **{"video.frames": 16}), video_path, "Hi", loaded=loaded)
    assert report.frames == 16 and report.total_frames == 12 and report.repeated_frames
    assert "fewer than the 16 requested" in report.video_note
    assert report.tokens_before == 16 * TOKENS_PER_FRAME


def test_random_checkpoint_is_flagged(loaded, tiny_original_dir: Path, video_path: Path) -> None:
    report = run_inference(tiny_config(tiny_original_dir), video_path, "Hi", loaded=loaded)
    assert report.random_checkpoint and "meaningless" in report.warning
    assert is_random_tiny({TINY_MARKER: True})
    assert not is_random_tiny({"model_type": "llava", "mm_hidden_size": 1152})  # real checkpoints: no marker


# ---- the picture --------------------------------------------------------------------------------------------
def test_visualize_writes_a_png_grid(loaded, tiny_original_dir: Path, video_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "pics" / "merge.png"
    report = run_inference(tiny_config(tiny_original_dir, **{"compression.retention_ratio": 0.1}), video_path,
                           "Hi", visualize=out, loaded=loaded)
    assert report.visualization == str(out)
    with Image.open(out) as picture:
        assert picture.format == "PNG" and picture.size == grid_size(FRAMES)


def test_picture_colours_each_patch_by_its_kept_token() -> None:
    frames = np.zeros((10, 20, 30, 3), dtype=np.uint8)  # black frames: the pixel colour is alpha * token colour
    assignment = np.zeros((10, 4), dtype=np.int64)  # 2x2 patches per frame
    assignment[:, 3] = 1  # bottom-right patch of every frame -> token 1
    picture = draw_assignment_grid(frames, assignment, tile=40, title="t")
    assert shown_frames(10) == [0, 1, 3, 4, 5, 6, 8, 9] and picture.size == grid_size(8, tile=40)
    pixels = np.asarray(picture)
    top = 4 + 18  # PAD + HEADER
    colours = palette(2).astype(float)
    top_left = pixels[top + 10, 4 + 10].astype(float)
    bottom_right = pixels[top + 30, 4 + 30].astype(float)
    assert np.allclose(top_left, 0.55 * colours[0], atol=2) and np.allclose(bottom_right, 0.55 * colours[1], atol=2)
    assert len({tuple(c) for c in palette(64)}) == 64 and (palette(5) == palette(5)).all()


# ---- flags -> config ----------------------------------------------------------------------------------------
def test_tau_and_ratio_flags_override_the_config() -> None:
    parse = build_parser().parse_args
    config = load_config(infer.DEFAULT_CONFIG, overrides_from_args(parse(["--tau", "0.8"])))
    assert config.compression.tau == 0.8 and config.compression.retention_ratio is None
    tau_config = resolve_config_path("scissor-baseline-7b-tau")
    config = load_config(tau_config, overrides_from_args(parse(["--retention-ratio", "0.05", "--frames", "8"])))
    assert config.compression.retention_ratio == 0.05 and config.compression.tau is None
    assert config.video.frames == 8
    config = load_config(infer.DEFAULT_CONFIG, overrides_from_args(parse(["--precision", "input"])))
    assert config.compression.precision == "input" and config.compression.retention_ratio == 0.1
    config = load_config(infer.DEFAULT_CONFIG, overrides_from_args(parse(["--method", "none"])))
    assert config.compression.method == "none" and config.compression.retention_ratio is None


# ---- command line: one JSON object, one-line errors ---------------------------------------------------------
def test_module_prints_one_json_object(tiny_original_dir: Path, video_path: Path, tmp_path: Path) -> None:
    result = run_cli([sys.executable, "-m", "llava.infer", "--video", str(video_path), "--model",
                      str(tiny_original_dir), "--device", "cpu", "--frames", str(FRAMES), "--retention-ratio", "0.1",
                      "--max-new-tokens", "3", "--json"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert JSON_KEYS <= set(report) and set(report["timings_ms"]) == set(STAGES)
    assert report["tokens_before"] == FRAMES * TOKENS_PER_FRAME and report["tokens_after"] == 6
    assert report["config"]["compression"]["retention_ratio"] == 0.1
    assert [a["question"] for a in report["answers"]] == [infer.DEFAULT_QUESTION]
    assert "meaningless" in report["warning"] and "meaningless" in result.stderr


def test_bash_script_runs_from_any_directory(tiny_original_dir: Path, video_path: Path, tmp_path: Path) -> None:
    result = run_cli(["bash", str(REPO / "scripts" / "infer_video.sh"), "--video", str(video_path), "--model",
                      str(tiny_original_dir), "--device", "cpu", "--frames", str(FRAMES), "--tau", "0.9",
                      "--max-new-tokens", "2", "--json"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["config"]["compression"] == {**report["config"]["compression"], "tau": 0.9,
                                               "retention_ratio": None}
    assert report["tau_spatial"] == 0.9 and 1 <= report["tokens_after"] <= report["tokens_before"]


def assert_one_line_error(capsys: pytest.CaptureFixture, code: int, *needles: str) -> str:
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and err.startswith("error:"), err
    for needle in needles:
        assert needle in err, err
    return err


def cli_args(checkpoint: Path, video: Path) -> list[str]:
    return ["--video", str(video), "--model", str(checkpoint), "--device", "cpu", "--frames", str(FRAMES)]


def test_missing_video(capsys, tiny_original_dir: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nope.mp4"
    assert_one_line_error(capsys, main(cli_args(tiny_original_dir, missing)), str(missing), "not found")


def test_non_video_file(capsys, tiny_original_dir: Path, tmp_path: Path) -> None:
    fake = tmp_path / "notes.mp4"
    fake.write_text("this is not a video\n" * 10)
    assert_one_line_error(capsys, main(cli_args(tiny_original_dir, fake)), str(fake))


def test_missing_checkpoint_dir(capsys, video_path: Path, tmp_path: Path) -> None:
    missing = tmp_path / "no-checkpoint"
    assert_one_line_error(capsys, main(cli_args(missing, video_path)), str(missing), "--model DIR")


def test_unreachable_hub_checkpoint(capsys, monkeypatch, video_path: Path) -> None:
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    def offline(*args: object, **kwargs: object) -> None:
        raise LocalEntryNotFoundError("outgoing traffic has been disabled.\nSet HF_HUB_OFFLINE=0")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    code = main(["--video", str(video_path), "--model", "someone/llava-onevision-x", "--device", "cpu"])
    assert_one_line_error(capsys, code, "someone/llava-onevision-x", "--model DIR", "could not be fetched")


def test_bad_config_values(capsys, tiny_original_dir: Path, video_path: Path, tmp_path: Path) -> None:
    assert_one_line_error(capsys, main(cli_args(tiny_original_dir, video_path) + ["--frames", "0"]), "video.frames")
    bad = tmp_path / "bad.yaml"
    bad.write_text("video:\n  backend: opencv\n")
    assert_one_line_error(capsys, main(cli_args(tiny_original_dir, video_path) + ["--config", str(bad)]),
                          "video.backend")
    assert_one_line_error(capsys, main(["--config", str(tmp_path / "none.yaml")]), "none.yaml")
    assert_one_line_error(capsys, main(["--tau", "0.9", "--retention-ratio", "0.1"]), "either --tau")
    assert_one_line_error(capsys, main(["--tau", "1.5"]), "compression.tau")
    if not torch.cuda.is_available():
        assert_one_line_error(capsys, main(cli_args(tiny_original_dir, video_path) + ["--device", "cuda"]), "CUDA")


def test_default_video_is_the_demo_clip(capsys, tiny_original_dir: Path) -> None:
    code = main(["--model", str(tiny_original_dir), "--device", "cpu", "--frames", "2", "--max-new-tokens", "1",
                 "--json"])
    out = capsys.readouterr()
    assert code == 0 and "WARNING" in out.err
    assert json.loads(out.out)["video"] == str(infer.DEFAULT_VIDEO)


def test_installed_package_runs_with_a_shipped_config_name(tiny_original_dir: Path, tmp_path: Path) -> None:
    """A non-editable install (what `pip install .` puts in site-packages) carries the configs and the demo clip:
    `llava-infer --config NAME` works from a directory with no source tree around."""
    target = tmp_path / "site"
    build = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                            "--target", str(target), str(REPO)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr
    assert (target / "llava" / "configs" / "llava-ov-7b-scissor.yaml").is_file()
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    result = run_cli([str(target / "bin" / "llava-infer"), "--config", "scissor-baseline-0.5b", "--model",
                      str(tiny_original_dir), "--device", "cpu", "--frames", "2", "--max-new-tokens", "1", "--json"],
                     cwd=workdir, env_extra={"PYTHONPATH": str(target)})
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["video"].startswith(str(target)) and report["config"]["compression"]["retention_ratio"] == 0.35



def test_sampling_run_splits_prefill_from_generate(loaded, tiny_original_dir: Path, video_path: Path) -> None:
    config = tiny_config(tiny_original_dir, **{"generation.temperature": 1.0, "generation.max_new_tokens": 4})
    report = run_inference(config, video_path, ["Hi", "Why?"], loaded=loaded)
    assert [a.question for a in report.answers] == ["Hi", "Why?"]
    assert all(a.new_tokens <= 4 and a.prefill_ms > 0 for a in report.answers)  # fewer if a stop token is sampled
    assert report.timings_ms["prefill"] == pytest.approx(sum(a.prefill_ms for a in report.answers))
    assert report.timings_ms["generate"] == pytest.approx(sum(a.generate_ms for a in report.answers))
