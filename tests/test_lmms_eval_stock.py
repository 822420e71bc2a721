"""lmms-eval 0.7.3's stock `llava_onevision` class, unmodified, evaluating this package through `python -m lmms_eval`.

That is how LLaVA-Scissor's paper numbers were made (`--model llava_onevision --model_args
pretrained=...,conv_template=qwen_2,model_name=llava_qwen_zip`). Each run uses a tiny checkpoint, a tiny local
multiple-choice task written here (video files, or frame lists with `sample_frames`) and its own HF_HOME. lmms-eval
exits 0 even when evaluation fails and answers a video it cannot load from the text alone, so every run is checked
on its results JSON, its samples file and its log; the visual token counts come from this package's own log
(`llava.compression` at DEBUG, switched on by a sitecustomize in the subprocess) and the answers are compared with
this package's own API on the same frames.
"""
from __future__ import annotations

import copy
import importlib.util
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from llava.compression import CompressionConfig, compress
from llava.demo_clip import make_demo_clip
from llava.testing.tiny_checkpoint import TinySpec, original_config, write_tiny_checkpoint

FRAMES = 32  # the class's default max_frames_num, as in the paper's runs
SAMPLE_FRAMES = 6
MAX_NEW_TOKENS = 4
TOKENS_PER_FRAME = {2: 16, 4: 4}  # tiny 7x7 grid: bilinear to ceil(7 / stride) per side
COMPRESSED = re.compile(r"compressed (\d+) -> (\d+) tokens")

TASK_UTILS = '''
import av
from PIL import Image


def doc_to_visual(doc):
    return [doc["video"]]


def doc_to_frames(doc):
    with av.open(doc["video"]) as container:
        return [Image.fromarray(frame.to_ndarray(format="rgb24")) for frame in container.decode(video=0)]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return doc["question"] + "\\n" + "\\n".join(doc["options"]) + "\\nAnswer with the option's letter."


def process_results(doc, results):
    return {"accuracy": float(results[0].strip()[:1] == doc["answer"])}
'''

TASK_YAML = '''task: {name}
dataset_path: json
dataset_kwargs:
  data_files: {docs}
test_split: train
output_type: generate_until
doc_to_visual: !function utils.{visual}
doc_to_text: !function utils.doc_to_text
doc_to_target: answer
generation_kwargs:
  max_new_tokens: {max_new_tokens}
  temperature: 0
  top_p: 1.0
  num_beams: 1
  do_sample: false
process_results: !function utils.process_results
metric_list:
  - metric: accuracy
    aggregation: mean
    higher_is_better: true
{metadata}'''

SITECUSTOMIZE = '''import logging
import os

if os.environ.get("LLAVA_TEST_LOG"):
    _handler = logging.FileHandler(os.environ["LLAVA_TEST_LOG"])
    _handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    logging.getLogger("llava").addHandler(_handler)
    logging.getLogger("llava").setLevel(logging.DEBUG)
'''


@dataclass
class Run:
    results: dict
    samples: list[dict]
    log: str  # lmms-eval's stdout and stderr
    llava_log: str  # this package's log records

    def token_counts(self) -> list[tuple[int, int]]:
        return sorted((int(a), int(b)) for a, b in COMPRESSED.findall(self.llava_log))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if importlib.util.find_spec("lmms_eval") is None:
        pytest.fail("lmms-eval is not installed: run scripts/test.sh, which installs lmms-eval 0.7.3 (--no-deps)")
    root = tmp_path_factory.mktemp("lmms_eval")
    docs = []
    for i, (frames, size, question, options, answer) in enumerate([
        (40, (96, 72), "What moves across the scene?", ["A. a red disc", "B. a cat"], "A"),
        (24, (64, 80), "What colour is the floor?", ["A. red", "B. green"], "B"),
    ]):
        video = make_demo_clip(root / f"video{i}.mp4", num_frames=frames, size=size)
        docs.append(dict(video=str(video), question=question, options=options, answer=answer))
    (root / "docs.json").write_text(json.dumps(docs))
    tasks = root / "tasks"
    tasks.mkdir()
    (tasks / "utils.py").write_text(TASK_UTILS)
    for name, visual, metadata in (
        ("tiny_video_mc", "doc_to_visual", ""),
        ("tiny_frames_mc", "doc_to_frames", f"metadata:\n  task_type: video\n  sample_frames: {SAMPLE_FRAMES}\n"),
    ):
        (tasks / f"{name}.yaml").write_text(TASK_YAML.format(
            name=name, docs=root / "docs.json", visual=visual, max_new_tokens=MAX_NEW_TOKENS, metadata=metadata))
    (root / "site").mkdir()
    (root / "site" / "sitecustomize.py").write_text(SITECUSTOMIZE)
    return root


def run_lmms_eval(workdir: Path, name: str, model_args: str, task: str) -> Run:
    """`python -m lmms_eval --model llava_onevision` in a subprocess, as a user runs it (CPU)."""
    out = workdir / f"run_{name}"
    env = {**os.environ, "HF_HOME": str(workdir / f"hf_{name}"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "LLAVA_TEST_LOG": str(out / "llava.log"),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(workdir / "site"), os.environ.get("PYTHONPATH")]))}
    out.mkdir()
    command = [sys.executable, "-m", "lmms_eval", "--model", "llava_onevision", "--model_args",
               f"{model_args},conv_template=qwen_2,device_map=auto", "--device", "cpu", "--tasks", task,
               "--include_path", str(workdir / "tasks"), "--batch_size", "1", "--log_samples",
               "--output_path", str(out)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-4000:]
    results, samples = list(out.glob("*/*_results.json")), list(out.glob(f"*/*_samples_{task}.jsonl"))
    assert len(results) == 1 and len(samples) == 1, f"no results / samples written:\n{log[-4000:]}"
    lines = samples[0].read_text().splitlines()
    return Run(json.loads(results[0].read_text()), [json.loads(line) for line in lines], log,
               (out / "llava.log").read_text())


def assert_evaluated(run: Run, task: str, n_docs: int) -> None:
    """What lmms-eval hides behind exit code 0: every doc answered, the metric aggregated, no video dropped."""
    assert "in loading video" not in run.log and "Error during evaluation" not in run.log, run.log[-4000:]
    assert sorted(sample["doc_id"] for sample in run.samples) == list(range(n_docs))
    assert all(isinstance(sample["filtered_resps"], str) for sample in run.samples)
    accuracy = run.results["results"][task]["accuracy,none"]
    assert 0.0 <= accuracy <= 1.0
    assert len(run.token_counts()) == n_docs  # one compression call (a video) per doc


def reference_answers(model, tokenizer, pixels: list[torch.Tensor], docs: list[dict]) -> list[str]:
    """This package's own API on the same pixels and lmms-eval's prompt (`<image>\\n` + the task's text)."""
    from llava.conversation import conv_templates
    from llava.mm_utils import tokenizer_image_token

    answers = []
    for video, doc in zip(pixels, docs, strict=True):
        conv = copy.deepcopy(conv_templates["qwen_2"])
        text = doc["question"] + "\n" + "\n".join(doc["options"]) + "\nAnswer with the option's letter."
        conv.append_message(conv.roles[0], "<image>\n" + text)
        conv.append_message(conv.roles[1], None)
        ids = tokenizer_image_token(conv.get_prompt(), tokenizer, return_tensors="pt")[None]
        out = model.generate(ids, images=[video.half()], modalities=["video"], do_sample=False,
                             max_new_tokens=MAX_NEW_TOKENS)
        answers.append(tokenizer.batch_decode(out, skip_special_tokens=True)[0].strip())
    return answers


def video_pixels(processor, docs: list[dict]) -> list[torch.Tensor]:
    from llava.video import load_video

    return [processor.preprocess(load_video(doc["video"], FRAMES, backend="decord").frames)["pixel_values"]
            for doc in docs]


def frame_list_pixels(processor, docs: list[dict]) -> list[torch.Tensor]:
    """lmms-eval's `sample_frames` path: linspace over the frame list, then `process_images` with "pad"."""
    import av

    from llava.mm_utils import process_images

    pad = type("Config", (), {"image_aspect_ratio": "pad"})()
    pixels = []
    for doc in docs:
        with av.open(doc["video"]) as container:
            frames = [Image.fromarray(f.to_ndarray(format="rgb24")) for f in container.decode(video=0)]
        picked = [frames[i] for i in np.linspace(0, len(frames) - 1, SAMPLE_FRAMES, dtype=int)]
        pixels.append(process_images(picked, processor, pad))
    return pixels


def expected_counts(model, pixels: list[torch.Tensor]) -> list[tuple[int, int]]:
    """(tokens in, tokens out) per video from `compress` itself, with the config the test expects."""
    with torch.no_grad():
        pooled = [model.pooled_features(video.half()) for video in pixels]
    return sorted((p.shape[0] * p.shape[1], compress(p, model.default_compression).tokens.shape[0]) for p in pooled)


def answers_by_doc(run: Run) -> list[str]:
    return [s["filtered_resps"] for s in sorted(run.samples, key=lambda s: s["doc_id"])]


def docs_of(workdir: Path) -> list[dict]:
    return json.loads((workdir / "docs.json").read_text())


def test_paper_command_compresses_as_the_checkpoint_says(workdir: Path) -> None:
    """The authors' command: model_name=llava_qwen_zip on a LLaVA-Scissor-style checkpoint (model_type llava_qwen,
    `mm_use_zip` the string "false", which their code reads as on; tau 0.9; Qwen's generation_config.json)."""
    from llava.model.builder import load_pretrained_model

    spec = TinySpec(use_zip="false", zip_tau=0.9, zip_epsilon=0.05)
    checkpoint = write_tiny_checkpoint(workdir / "scissor", "original", seed=0, spec=spec)
    config = {**json.loads((checkpoint / "config.json").read_text()), "model_type": "llava_qwen"}
    (checkpoint / "config.json").write_text(json.dumps(config))
    (checkpoint / "generation_config.json").write_text(json.dumps({"repetition_penalty": 1.05}))
    run = run_lmms_eval(workdir, "zip", f"pretrained={checkpoint},model_name=llava_qwen_zip", "tiny_video_mc")
    assert_evaluated(run, "tiny_video_mc", 2)

    tokenizer, model, processor, _ = load_pretrained_model(str(checkpoint), None, "llava_qwen_zip", device_map="cpu")
    assert model.dtype == torch.float16  # what the class gets: it passes no dtype
    assert model.default_compression == CompressionConfig(method="scc", tau=0.9, epsilon=0.05, precision="input")
    assert f"compression {model.default_compression}" in run.llava_log  # what the builder in the subprocess resolved
    pixels, docs = video_pixels(processor, docs_of(workdir)), docs_of(workdir)
    counts = expected_counts(model, pixels)
    assert run.token_counts() == counts and all(n_in == FRAMES * 16 > n_out for n_in, n_out in counts)
    assert answers_by_doc(run) == reference_answers(model, tokenizer, pixels, docs)


def test_frame_lists_without_compression_on_an_hf_checkpoint(workdir: Path) -> None:
    """model_name without "zip" on a llava-hf checkpoint, a `sample_frames` task: every token kept."""
    from llava.model.builder import load_pretrained_model

    checkpoint = write_tiny_checkpoint(workdir / "hf", "hf", seed=1)
    run = run_lmms_eval(workdir, "hf", f"pretrained={checkpoint},model_name=llava_qwen", "tiny_frames_mc")
    assert_evaluated(run, "tiny_frames_mc", 2)
    assert run.token_counts() == [(SAMPLE_FRAMES * 16, SAMPLE_FRAMES * 16)] * 2
    assert f"compression {CompressionConfig(method='none')}" in run.llava_log

    tokenizer, model, processor, _ = load_pretrained_model(str(checkpoint), None, "llava_qwen", device_map="cpu")
    docs = docs_of(workdir)
    assert answers_by_doc(run) == reference_answers(model, tokenizer, frame_list_pixels(processor, docs), docs)


def test_pool_stride_and_customized_config_reach_the_model(workdir: Path) -> None:
    """`mm_spatial_pool_stride=4` (the class sends it through overwrite_config and re-assigns it per video) and a
    `customized_config` JSON that switches LLaVA-Scissor's compression on with tau 0.8."""
    from llava.model.builder import load_pretrained_model

    checkpoint = write_tiny_checkpoint(workdir / "plain", "original", seed=2)
    custom = workdir / "custom_config.json"
    custom.write_text(json.dumps({**original_config(TinySpec()), "mm_use_zip": True, "mm_zip_tau": 0.8}))
    args = f"pretrained={checkpoint},model_name=llava_qwen,mm_spatial_pool_stride=4,customized_config={custom}"
    run = run_lmms_eval(workdir, "custom", args, "tiny_video_mc")
    assert_evaluated(run, "tiny_video_mc", 2)

    _, model, processor, _ = load_pretrained_model(str(checkpoint), None, "llava_qwen", device_map="cpu",
                                                   customized_config=str(custom),
                                                   overwrite_config={"mm_spatial_pool_stride": 4})
    assert model.default_compression == CompressionConfig(method="scc", tau=0.8, epsilon=0.05, precision="input")
    assert f"compression {model.default_compression}" in run.llava_log
    counts = expected_counts(model, video_pixels(processor, docs_of(workdir)))
    assert run.token_counts() == counts and all(n_in == FRAMES * TOKENS_PER_FRAME[4] for n_in, _ in counts)
