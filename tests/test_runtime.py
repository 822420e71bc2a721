"""The runtime's single homes: answer ids -> text (cut at the first stop id), one prompt builder, one clock, the
compression in effect, one checkpoint read per load, and the frame default every front end reads."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from llava import runtime
from llava.compression import CompressionConfig
from llava.config_types import FRAME_BATCH_SIZE
from llava.constants import IMAGE_TOKEN_INDEX
from llava.conversation import conv_templates, video_prompt_ids
from llava.eval.calibrate import build_parser as calibrate_parser
from llava.eval.features import FrameSettings
from llava.eval.grid import GridOptions
from llava.mm_utils import tokenizer_image_token
from llava.run_config import ModelSection, VideoSection, load_config
from llava.runtime import StageClock, answer_ids, answer_text, load_for_run


# ---- generated ids -> answer ---------------------------------------------------------------------------------
def test_answer_ids_stop_at_the_first_stop_id() -> None:
    assert answer_ids([5, 6, 2, 7, 2], stop_ids=[2, 3]) == [5, 6]
    assert answer_ids(torch.tensor([5, 3, 2, 2]), stop_ids=[2, 3]) == [5]  # batch padding after the stop
    assert answer_ids([5, 6, 7], stop_ids=[2]) == [5, 6, 7]  # max_new_tokens reached: no stop
    assert answer_ids([2, 5], stop_ids=[2]) == []


def test_answer_text_decodes_only_what_precedes_the_stop(tiny_model_bundle) -> None:
    tokenizer, model = tiny_model_bundle[0], tiny_model_bundle[1]
    stop = model.stop_token_ids[0]
    words = tokenizer("red square moves", add_special_tokens=False)["input_ids"]
    tail = tokenizer(" then more", add_special_tokens=False)["input_ids"]
    row = torch.tensor(words + [stop] + tail + [stop])
    assert answer_text(row, tokenizer, model.stop_token_ids) == "red square moves"  # not "... then more"


# ---- one prompt builder --------------------------------------------------------------------------------------
def test_video_prompt_ids_puts_the_video_first_unless_the_text_places_it(tiny_model_bundle) -> None:
    tokenizer = tiny_model_bundle[0]

    def chat(user: str, template: str = "qwen_2") -> torch.Tensor:
        conv = conv_templates[template].copy()
        conv.append_message(conv.roles[0], user)
        conv.append_message(conv.roles[1], None)
        return tokenizer_image_token(conv.get_prompt(), tokenizer, return_tensors="pt")

    assert torch.equal(video_prompt_ids("What moves?", tokenizer), chat("<image>\nWhat moves?"))
    placed = video_prompt_ids("Watch: <image> What moves?", tokenizer, "qwen_2_5")
    assert torch.equal(placed, chat("Watch: <image> What moves?", "qwen_2_5"))
    assert int((placed == IMAGE_TOKEN_INDEX).sum()) == 1


# ---- one clock, one decision for the compression in effect ---------------------------------------------------
def test_stage_clock_reads_the_device_synced_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    reads = iter([10.0, 10.25, 20.0, 20.5])
    devices = []

    def fake_now(device: torch.device) -> float:
        devices.append(device)
        return next(reads)

    monkeypatch.setattr(runtime, "synced_now", fake_now)
    clock = StageClock(torch.device("cpu"))
    with clock.stage("vision"):
        pass
    with clock.stage("compression"):
        pass
    assert clock.ms == {"vision": 250.0, "compression": 500.0}
    assert devices == [torch.device("cpu")] * 4


def test_compression_in_effect_is_the_calls_else_the_models_default(tiny_model) -> None:
    own = CompressionConfig(method="uniform", retention_ratio=0.5)
    assert tiny_model.compression_in_effect(own) is own
    assert tiny_model.compression_in_effect(None) is tiny_model.default_compression


# ---- one checkpoint read per load ----------------------------------------------------------------------------
def test_load_for_run_resolves_and_reads_the_checkpoint_once(tiny_original_dir: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from llava.model import builder, checkpoint

    calls = {"resolve": 0, "read": 0}

    def counted(name: str, fn):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)
        return wrapper

    resolve, read = counted("resolve", checkpoint.resolve_checkpoint), counted("read", checkpoint.read_config)
    for module in (checkpoint, builder):
        monkeypatch.setattr(module, "resolve_checkpoint", resolve)
        monkeypatch.setattr(module, "read_config", read)
    loaded = load_for_run(load_config(None, {"model.path": str(tiny_original_dir), "model.device": "cpu"}))
    assert calls == {"resolve": 1, "read": 1}
    assert loaded.random_tiny and loaded.checkpoint_dir == tiny_original_dir
    assert loaded.model.stop_token_ids and loaded.processor.image_size == loaded.model.config.vision.image_size


# ---- defaults read from the run config -----------------------------------------------------------------------
def test_every_front_end_reads_the_run_configs_defaults() -> None:
    frames = VideoSection().frames
    assert frames == 32  # lmms-eval's and the paper's 32 x 196 tokens
    assert FrameSettings().num_frames == GridOptions.frames == frames
    defaults = calibrate_parser().parse_args(["--pretrained", "x", "--videos", "a.mp4", "--target", "0.1"])
    assert (defaults.frames, defaults.backend) == (frames, VideoSection().backend)
    assert (defaults.dtype, defaults.device) == (ModelSection().dtype, ModelSection().device)
    assert ModelSection().frame_batch_size == FRAME_BATCH_SIZE
