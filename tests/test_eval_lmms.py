"""The `llava_scissor` lmms-eval model: budgets, batching, compress-once cache, per-sample log, resume, lmms-eval
end to end (entry point, a Video-MME-based local task) and two data-parallel processes."""
from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from lmms_eval.api.instance import Instance

from llava.compression import CompressionConfig
from llava.demo_clip import make_demo_clip
from llava.eval.lmms_model import LlavaScissor
from llava.testing.tiny_task import write_tiny_task
from llava.video import VideoDecodeError

FRAMES = 6
TOKENS_PER_FRAME = 16  # tiny checkpoint: 7x7 patches -> bilinear 4x4
GEN = {"max_new_tokens": 4, "temperature": 0, "top_p": 1.0, "num_beams": 1, "do_sample": False}
TASK = "toy"


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    out = tmp_path_factory.mktemp("lmms_clips")
    return [make_demo_clip(out / f"c{i}.mp4", num_frames=9 + 4 * i, size=(48 + 16 * i, 40), fps=8) for i in range(2)]


def _model(ckpt: Path, **args) -> LlavaScissor:
    args = {"max_frames_num": FRAMES, "video_backend": "pyav", "device": "cpu", "attn_implementation": "eager",
            **args}
    return LlavaScissor(pretrained=str(ckpt), **args)


def _requests(model: LlavaScissor, videos: list[Path], questions: int = 2) -> list[Instance]:
    """Two questions per video (as Video-MME), docs served from `model.task_dict` as lmms-eval does."""
    docs = [{"video": str(v), "q": f"Question {q} about {v.stem}?"} for v in videos for q in range(questions)]
    model.task_dict = {TASK: {"test": docs}}
    return [Instance("generate_until", (d["q"], dict(GEN), lambda doc: [doc["video"]], i, TASK, "test"), idx=0,
                     metadata={"task": TASK, "doc_id": i, "repeats": 1}) for i, d in enumerate(docs)]


def _log(log_dir: Path) -> list[dict]:
    return [json.loads(line) for f in sorted(log_dir.glob("rank*.jsonl")) for line in f.read_text().splitlines()]


def test_token_counts_follow_retention_ratio_and_cache_reuses_blocks(tiny_original_dir, clips, tmp_path) -> None:
    ratio = 0.25
    model = _model(tiny_original_dir, retention_ratio=ratio, log_dir=str(tmp_path / "log"))
    answers = model.generate_until(_requests(model, clips))
    assert len(answers) == 4 and all(isinstance(a, str) for a in answers)
    records = _log(tmp_path / "log")
    expected = max(1, round(ratio * FRAMES * TOKENS_PER_FRAME))
    assert [r["tokens_out"] for r in records] == [expected] * 4
    assert all(r["tokens_in"] == FRAMES * TOKENS_PER_FRAME for r in records)
    assert sorted(r["doc_id"] for r in records) == [0, 1, 2, 3]
    assert sum(r["cache_hit"] for r in records) == 2, "the second question on each video reuses its block"
    assert model.cache.counters.misses == 2 and model.cache.counters.hits == 2
    assert all(block.video.tokens.shape[0] == expected for block in model.cache.entries.values())
    for r in records:
        assert r["tau_spatial"] is not None and r["prefill_ms"] > 0 and r["decode_ms"] >= 0

    model.compression = CompressionConfig(method="uniform", retention_ratio=0.5)
    block, hit = model.encoded_video(str(clips[0]))
    assert not hit and block.video.tokens.shape[0] == round(0.5 * FRAMES * TOKENS_PER_FRAME)
    assert model.encoded_video(str(clips[0]))[1]
    model.frames = replace(model.frames, num_frames=4)
    block, hit = model.encoded_video(str(clips[0]))
    assert not hit and block.video.stats.tokens_in == 4 * TOKENS_PER_FRAME


def test_batch_of_two_answers_as_one_by_one(tiny_original_dir, clips) -> None:
    model = _model(tiny_original_dir, tau=0.95, batch_size=1)
    one = model.generate_until(_requests(model, clips))
    model.options = replace(model.options, batch_size=2)
    model.cache.entries.clear()
    two = model.generate_until(_requests(model, clips))
    assert two == one


def test_resume_reuses_logged_answers(tiny_original_dir, clips, tmp_path, monkeypatch) -> None:
    log_dir = str(tmp_path / "log")
    first = _model(tiny_original_dir, retention_ratio=0.5, log_dir=log_dir)
    answers = first.generate_until(_requests(first, clips[:1]))
    again = _model(tiny_original_dir, retention_ratio=0.5, log_dir=log_dir)

    def no_generation(*args, **kwargs):
        raise AssertionError("answered samples must not be generated again")

    monkeypatch.setattr(again.model.language_model, "generate", no_generation)
    assert again.generate_until(_requests(again, clips[:1])) == answers
    other = _model(tiny_original_dir, retention_ratio=0.25, log_dir=log_dir)  # another budget: no reuse
    monkeypatch.setattr(other.model.language_model, "generate", no_generation)
    with pytest.raises(AssertionError, match="must not be generated"):
        other.generate_until(_requests(other, clips[:1]))


def test_undecodable_video_fails_the_sample(tiny_original_dir, tmp_path) -> None:
    bad = tmp_path / "broken.mp4"
    bad.write_text("not a video")
    model = _model(tiny_original_dir, retention_ratio=0.5)
    with pytest.raises(VideoDecodeError, match="broken.mp4"):
        model.generate_until(_requests(model, [bad], questions=1))


def test_rejected_requests_and_arguments(tiny_original_dir) -> None:
    model = _model(tiny_original_dir, method="none")
    with pytest.raises(NotImplementedError, match="generate_until"):
        model.loglikelihood([])
    with pytest.raises(NotImplementedError, match="multi-round"):
        model.generate_until_multi_round([])
    with pytest.raises(TypeError, match="unknown model_args"):
        _model(tiny_original_dir, retention=0.1)
    with pytest.raises(ValueError, match="conv_template"):
        _model(tiny_original_dir, conv_template="vicuna")


# ---- through lmms-eval ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_task(tmp_path_factory: pytest.TempPathFactory):
    return write_tiny_task(tmp_path_factory.mktemp("tiny_task"), videos=2, questions=2)


def lmms_env(hf_home: Path) -> dict[str, str]:
    return {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
            "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def _results(out: Path) -> dict:
    found = glob.glob(str(out / "**" / "*_results.json"), recursive=True)
    assert len(found) == 1, found
    return json.loads(Path(found[0]).read_text())


def test_plugin_runs_through_lmms_eval(tiny_original_dir, tiny_task, tmp_path) -> None:
    out = tmp_path / "run"
    args = (f"pretrained={tiny_original_dir},retention_ratio=0.25,max_frames_num={FRAMES},video_backend=pyav,"
            f"device=cpu,log_dir={out / 'samples'}")
    subprocess.run([sys.executable, "-m", "lmms_eval", "--model", "llava_scissor", "--model_args", args,
                    "--tasks", tiny_task.name, "--include_path", str(tiny_task.include_path), "--batch_size", "2",
                    "--output_path", str(out)], env=lmms_env(tiny_task.hf_home), check=True, timeout=900)
    score = _results(out)["results"][tiny_task.name]["videomme_perception_score,none"]
    assert 0.0 <= score <= 100.0
    records = _log(out / "samples")
    assert sorted(r["doc_id"] for r in records) == list(range(tiny_task.docs))
    assert {r["tokens_out"] for r in records} == {round(0.25 * FRAMES * TOKENS_PER_FRAME)}
    assert sum(r["cache_hit"] for r in records) == tiny_task.docs - len(tiny_task.videos)


def test_two_processes_cover_every_doc_once(tiny_original_dir, tiny_task, tmp_path) -> None:
    out = tmp_path / "ddp"
    args = (f"pretrained={tiny_original_dir},retention_ratio=0.5,max_frames_num={FRAMES},video_backend=pyav,"
            f"log_dir={out / 'samples'}")
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                    "29517", "-m", "lmms_eval", "--model", "llava_scissor", "--model_args", args,
                    "--tasks", tiny_task.name, "--include_path", str(tiny_task.include_path),
                    "--output_path", str(out)], env={**lmms_env(tiny_task.hf_home), "ACCELERATE_USE_CPU": "1"},
                   check=True, timeout=900)
    records = _log(out / "samples")
    by_rank = {f.name: [json.loads(x)["doc_id"] for x in f.read_text().splitlines()]
               for f in (out / "samples").glob("rank*.jsonl")}
    assert sorted(by_rank) == ["rank0.jsonl", "rank1.jsonl"] and all(by_rank.values())
    assert sorted(r["doc_id"] for r in records) == list(range(tiny_task.docs))
    assert _results(out)["n-samples"][tiny_task.name]["effective"] == tiny_task.docs
