"""Shared fixtures: tiny random checkpoints in both formats (built once per session), frames, prompts."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from llava.conversation import conv_templates
from llava.testing.tiny_checkpoint import TinySpec, write_tiny_checkpoint

SEED = 0


@pytest.fixture(scope="session")
def tiny_original_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny LLaVA-NeXT-format (lmms-lab) checkpoint."""
    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny_original"), "original", seed=SEED)


@pytest.fixture(scope="session")
def tiny_hf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same weights as `tiny_original_dir`, in llava-hf format (padded vocabulary)."""
    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny_hf"), "hf", seed=SEED)


@pytest.fixture(scope="session")
def tiny_spec() -> TinySpec:
    return TinySpec()


@pytest.fixture(scope="session")
def tiny_model_bundle(tiny_original_dir: Path):
    """(tokenizer, model, image_processor, context_len) of the original-format tiny checkpoint, fp32 CPU."""
    from llava.model.builder import load_pretrained_model

    return load_pretrained_model(str(tiny_original_dir), device_map="cpu", attn_implementation="eager",
                                 torch_dtype="float32")


@pytest.fixture
def tiny_model(tiny_model_bundle):
    """The shared tiny model; its load-time newline policy is restored after each test."""
    model = tiny_model_bundle[1]
    newline = model.newline
    yield model
    model.newline = newline


def make_frames(n_frames: int, seed: int = 0, height: int = 40, width: int = 48) -> np.ndarray:
    """Random uint8 RGB frames [F, H, W, 3]."""
    return np.random.RandomState(seed).randint(0, 256, size=(n_frames, height, width, 3), dtype=np.uint8)


def video_prompt(question: str, template: str = "qwen_2") -> str:
    """The chat prompt a LLaVA-NeXT user builds for one video and one question."""
    conv = conv_templates[template].copy()
    conv.append_message(conv.roles[0], "<image>\n" + question)
    conv.append_message(conv.roles[1], None)
    return conv.get_prompt()


def mixed_batch(tokenizer, processor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Three (prompt ids, pixels) pairs with different prompt lengths and frame counts (2, 3, 1): the batch that
    left padding and per-row video spans must get right."""
    from llava.mm_utils import tokenizer_image_token

    questions = ["What happens in this video clip, step by step?", "Why?", "Who is there?"]
    ids = [tokenizer_image_token(video_prompt(q), tokenizer, return_tensors="pt") for q in questions]
    pixels = [processor.preprocess(make_frames(n, seed=n))["pixel_values"] for n in (2, 3, 1)]
    return ids, pixels


@pytest.fixture
def mixed_batch_factory():
    return mixed_batch


@pytest.fixture
def frames_factory():
    return make_frames


@pytest.fixture
def prompt_factory():
    return video_prompt


torch.set_num_threads(2)
