"""Parity: both checkpoint formats give the same logits, and both equal transformers' LlavaOnevision."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from llava.compression import CompressionConfig
from llava.mm_utils import tokenizer_image_token
from llava.model.builder import load_pretrained_model
from llava.testing.tiny_checkpoint import TinySpec, write_tiny_checkpoint

N_FRAMES = 3
TOKENS_PER_FRAME = 16  # tiny tower: 56 px / patch 8 -> 7x7 -> bilinear 4x4


def _logits(model_dir: Path, ids: torch.Tensor, pixels: torch.Tensor, **kwargs) -> torch.Tensor:
    kwargs.setdefault("torch_dtype", "float32")
    _, model, _, _ = load_pretrained_model(str(model_dir), device_map="cpu", attn_implementation="eager", **kwargs)
    with torch.no_grad():
        return model(ids[None], images=[pixels], modalities=["video"]).logits[0]


@pytest.fixture
def case(tiny_model_bundle, frames_factory, prompt_factory):
    tokenizer, _, processor, _ = tiny_model_bundle
    prompt = prompt_factory("What is happening in the video?")
    ids = tokenizer_image_token(prompt, tokenizer, return_tensors="pt")
    pixels = processor.preprocess(frames_factory(N_FRAMES), return_tensors="pt")["pixel_values"]
    return prompt, ids, pixels


def test_both_formats_give_identical_logits(tiny_original_dir: Path, tiny_hf_dir: Path, case) -> None:
    _, ids, pixels = case
    original, hf = _logits(tiny_original_dir, ids, pixels), _logits(tiny_hf_dir, ids, pixels)
    assert original.shape == (ids.numel() - 1 + N_FRAMES * TOKENS_PER_FRAME + 1, 384)
    torch.testing.assert_close(original, hf, rtol=0, atol=0)


def test_tied_checkpoint_has_no_lm_head_on_disk_and_loads_tied(tmp_path: Path, case) -> None:
    from safetensors import safe_open

    _, ids, pixels = case
    for fmt in ("original", "hf"):
        out = write_tiny_checkpoint(tmp_path / fmt, fmt, seed=1, spec=TinySpec(tie_word_embeddings=True))
        with safe_open(str(out / "model.safetensors"), "pt") as handle:
            assert not any("lm_head" in key for key in handle.keys())
    _, model, _, _ = load_pretrained_model(str(tmp_path / "original"), device_map="cpu")
    lm = model.language_model
    assert lm.lm_head.weight.data_ptr() == lm.get_input_embeddings().weight.data_ptr()
    torch.testing.assert_close(_logits(tmp_path / "original", ids, pixels), _logits(tmp_path / "hf", ids, pixels))


def test_equals_transformers_llava_onevision(tiny_hf_dir: Path, case) -> None:
    """Compression off, one newline after all frames: our logits == LlavaOnevisionForConditionalGeneration's."""
    from transformers import AutoTokenizer, LlavaOnevisionForConditionalGeneration

    prompt, ids, pixels = case
    reference = LlavaOnevisionForConditionalGeneration.from_pretrained(str(tiny_hf_dir), attn_implementation="eager")
    hf_tokenizer = AutoTokenizer.from_pretrained(str(tiny_hf_dir))
    n_video = N_FRAMES * TOKENS_PER_FRAME + 1
    ref_ids = hf_tokenizer(prompt.replace("<image>", "<video>" * n_video), return_tensors="pt").input_ids
    with torch.no_grad():
        expected = reference.eval()(input_ids=ref_ids, pixel_values_videos=pixels[None]).logits[0]
    ours = _logits(tiny_hf_dir, ids, pixels, compression=CompressionConfig(method="none"), newline="one_token")
    assert ours.shape[0] == expected.shape[0] == ref_ids.shape[1]
    torch.testing.assert_close(ours, expected[:, : ours.shape[1]], rtol=0, atol=1e-4)


def test_default_newline_follows_checkpoint_when_not_compressing(tiny_model, case) -> None:
    _, ids, pixels = case
    embeds = tiny_model.prepare_inputs(ids, [pixels], ["video"]).inputs_embeds[0]  # (L', D)
    image_at = int((ids == -200).nonzero())
    newline_at = image_at + N_FRAMES * TOKENS_PER_FRAME
    torch.testing.assert_close(embeds[newline_at], tiny_model.image_newline.detach())
    assert embeds.shape[0] == ids.numel() + N_FRAMES * TOKENS_PER_FRAME  # -1 placeholder, +1 newline


def test_bfloat16_load_runs_and_stays_close(tiny_original_dir: Path, case) -> None:
    _, ids, pixels = case
    _, model, _, _ = load_pretrained_model(str(tiny_original_dir), device_map="cpu", torch_dtype="bfloat16")
    assert model.dtype == torch.bfloat16
    assert model.vision_tower.embeddings.patch_embedding.weight.dtype == torch.bfloat16
    with torch.no_grad():
        logits = model(ids[None], images=[pixels.half()], modalities=["video"]).logits[0].float()
    reference = _logits(tiny_original_dir, ids, pixels)
    assert torch.isfinite(logits).all()
    assert (logits.argmax(-1) == reference.argmax(-1)).float().mean() > 0.8


@pytest.mark.slow
def test_real_0_5b_matches_transformers(frames_factory, prompt_factory) -> None:
    """Golden check on real weights (GPU user): set LLAVA_OV_ORIGINAL and LLAVA_OV_HF to local dirs or hub ids of
    lmms-lab/llava-onevision-qwen2-0.5b-ov and llava-hf/llava-onevision-qwen2-0.5b-ov-hf."""
    import os

    from transformers import AutoTokenizer, LlavaOnevisionForConditionalGeneration

    original, hf = os.environ.get("LLAVA_OV_ORIGINAL"), os.environ.get("LLAVA_OV_HF")
    if not (original and hf):
        pytest.skip("set LLAVA_OV_ORIGINAL and LLAVA_OV_HF")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    tokenizer, model, processor, _ = load_pretrained_model(original, device_map=device, torch_dtype="float32")
    prompt = prompt_factory("Describe the video.")
    pixels = processor.preprocess(frames_factory(4, height=360, width=640))["pixel_values"]
    ids = tokenizer_image_token(prompt, tokenizer, return_tensors="pt")[None].to(device)
    with torch.no_grad():
        ours = model(ids, images=[pixels], modalities=["video"]).logits[0]
    reference = LlavaOnevisionForConditionalGeneration.from_pretrained(hf, dtype=torch.float32).to(device).eval()
    hf_ids = AutoTokenizer.from_pretrained(hf)(prompt.replace("<image>", "<video>" * (4 * 196 + 1)),
                                               return_tensors="pt").input_ids.to(device)
    with torch.no_grad():
        expected = reference(input_ids=hf_ids, pixel_values_videos=pixels[None].to(device)).logits[0]
    torch.testing.assert_close(ours, expected[:, : ours.shape[1]], rtol=1e-3, atol=1e-3)
