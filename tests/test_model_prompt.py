"""Drop-in prompt building, placeholder tokenization and SigLIP preprocessing, against hand-computed answers."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from llava.constants import DEFAULT_IMAGE_TOKEN, IGNORE_INDEX, IMAGE_TOKEN_INDEX
from llava.conversation import conv_templates
from llava.mm_utils import get_model_name_from_path, tokenizer_image_token
from llava.model.image_processor import SiglipVideoProcessor

EXPECTED_QWEN2 = (
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n<image>\n"
    "What is the man doing?<|im_end|>\n<|im_start|>assistant\n"
)


def test_constants() -> None:
    assert (IMAGE_TOKEN_INDEX, IGNORE_INDEX, DEFAULT_IMAGE_TOKEN) == (-200, -100, "<image>")


@pytest.mark.parametrize("name", ["qwen_2", "qwen_1_5", "qwen"])
def test_qwen_prompt_is_exact(name: str) -> None:
    conv = conv_templates[name].copy()
    conv.append_message(conv.roles[0], DEFAULT_IMAGE_TOKEN + "\nWhat is the man doing?")
    conv.append_message(conv.roles[1], None)
    assert conv.get_prompt() == EXPECTED_QWEN2
    assert conv_templates[name].messages == []  # copy() leaves the template untouched


def test_qwen_2_5_system_prompt() -> None:
    conv = conv_templates["qwen_2_5"].copy()
    conv.append_message(conv.roles[0], "Hi")
    conv.append_message(conv.roles[1], "Hello")
    assert conv.get_prompt() == (
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello<|im_end|>\n"
    )


def test_tokenizer_image_token_splices_placeholder(tiny_model_bundle) -> None:
    tokenizer = tiny_model_bundle[0]
    ids = tokenizer_image_token(EXPECTED_QWEN2, tokenizer)
    before, after = EXPECTED_QWEN2.split("<image>")
    assert ids == tokenizer(before).input_ids + [IMAGE_TOKEN_INDEX] + tokenizer(after).input_ids
    assert ids[0] == tokenizer.convert_tokens_to_ids("<|im_start|>")  # no BOS for Qwen
    tensor = tokenizer_image_token(EXPECTED_QWEN2, tokenizer, return_tensors="pt")
    assert tensor.dtype == torch.long and tensor.tolist() == ids


class _BosTokenizer:
    """Every chunk starts with BOS=1; characters map to their code points."""

    bos_token_id = 1

    def __call__(self, text: str):
        return type("Enc", (), {"input_ids": [1] + [ord(c) for c in text]})()


def test_tokenizer_image_token_keeps_one_bos() -> None:
    assert tokenizer_image_token("a<image>b<image>", _BosTokenizer()) == [1, 97, -200, 98, -200]


def test_model_name_from_path() -> None:
    assert get_model_name_from_path("lmms-lab/llava-onevision-qwen2-0.5b-ov/") == "llava-onevision-qwen2-0.5b-ov"
    assert get_model_name_from_path("/ckpt/run1/checkpoint-500") == "run1_checkpoint-500"


def test_image_processor_matches_hand_computation() -> None:
    frames = np.random.RandomState(0).randint(0, 256, size=(2, 30, 50, 3), dtype=np.uint8)
    pixels = SiglipVideoProcessor(image_size=24).preprocess(frames, return_tensors="pt")["pixel_values"]
    assert pixels.shape == (2, 3, 24, 24) and pixels.dtype == torch.float32
    resized = np.asarray(Image.fromarray(frames[1]).resize((24, 24), Image.Resampling.BICUBIC), dtype=np.float32)
    expected = torch.from_numpy((resized / 255 - 0.5) / 0.5).permute(2, 0, 1)
    torch.testing.assert_close(pixels[1], expected, rtol=0, atol=1e-6)


def test_image_processor_accepts_pil_lists_and_rejects_floats() -> None:
    processor = SiglipVideoProcessor(image_size=16)
    frames = [Image.new("RGB", (20, 10), color=(255, 0, 0))] * 3
    pixels = processor.preprocess(frames)["pixel_values"]
    assert pixels.shape == (3, 3, 16, 16)
    torch.testing.assert_close(pixels[:, 0], torch.ones(3, 16, 16))  # red 255 -> +1
    torch.testing.assert_close(pixels[:, 1], -torch.ones(3, 16, 16))  # green 0 -> -1
    with pytest.raises(ValueError, match="uint8"):
        processor.preprocess(np.zeros((2, 8, 8, 3), dtype=np.float32))
