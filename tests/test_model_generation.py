"""The LLM receives exactly the compressor's tokens; generation (greedy, sampling, cache, stop, batches)."""
from __future__ import annotations

import pytest
import torch

from llava.compression import CompressionConfig, compress
from llava.constants import IMAGE_TOKEN_INDEX
from llava.model.modeling import pool_frames

SCC_QUARTER = CompressionConfig(method="scc", retention_ratio=0.25)


@pytest.fixture
def inputs(tiny_model_bundle, mixed_batch_factory):
    return mixed_batch_factory(tiny_model_bundle[0], tiny_model_bundle[2])


def _capture_llm_inputs(model) -> tuple[dict, torch.utils.hooks.RemovableHandle]:
    seen: dict = {}

    def hook(module, args, kwargs):
        seen.setdefault("inputs_embeds", kwargs["inputs_embeds"].detach().clone())

    return seen, model.language_model.register_forward_pre_hook(hook, with_kwargs=True)


def test_llm_receives_exactly_the_compressed_tokens(tiny_model, inputs) -> None:
    ids, pixels = inputs[0][0], inputs[1][1]
    with torch.no_grad():
        expected = compress(pool_frames(tiny_model.encode_frames(pixels), "bilinear"), SCC_QUARTER).tokens  # (K, D)
        seen, handle = _capture_llm_inputs(tiny_model)
        tiny_model(ids, images=[pixels], modalities=["video"], compression=SCC_QUARTER)
        handle.remove()
    assert expected.shape[0] == round(0.25 * 3 * 16)
    embeds = seen["inputs_embeds"][0]  # (L', D)
    start = int((ids == IMAGE_TOKEN_INDEX).nonzero())
    assert embeds.shape[0] == ids.numel() - 1 + expected.shape[0]  # no newline when compressing (auto)
    torch.testing.assert_close(embeds[start:start + expected.shape[0]], expected, rtol=0, atol=0)
    text = tiny_model.language_model.get_input_embeddings()(ids[start + 1:])
    torch.testing.assert_close(embeds[start + expected.shape[0]:], text, rtol=0, atol=0)
    encoded = tiny_model.encode_video(pixels, SCC_QUARTER)
    assert encoded.stats.tokens_out == expected.shape[0] and encoded.newline_tokens == 0
    torch.testing.assert_close(encoded.tokens, expected, rtol=0, atol=0)


def test_newline_can_be_forced_after_compressed_tokens(tiny_model, inputs) -> None:
    ids, pixels = inputs[0][0], inputs[1][0]
    tiny_model.newline = "one_token"
    with torch.no_grad():
        packed = tiny_model.prepare_inputs(ids, [pixels], ["video"], compression=SCC_QUARTER)
    k = round(0.25 * 2 * 16)
    newline_at = int((ids == IMAGE_TOKEN_INDEX).nonzero()) + k
    assert packed.inputs_embeds.shape[1] == ids.numel() - 1 + k + 1
    torch.testing.assert_close(packed.inputs_embeds[0, newline_at], tiny_model.image_newline.detach())


@pytest.mark.parametrize("compression", [CompressionConfig(method="none"), SCC_QUARTER])
def test_batched_generation_equals_one_by_one(tiny_model, inputs, compression) -> None:
    ids, pixels = inputs
    kwargs = dict(do_sample=False, max_new_tokens=6, eos_token_id=None, compression=compression)
    single = [tiny_model.generate(i, images=[p], modalities=["video"], **kwargs)[0]
              for i, p in zip(ids, pixels, strict=True)]
    batch = tiny_model.generate(ids, images=pixels, modalities=["video"] * 3, **kwargs)
    assert batch.shape == (3, 6)
    for row, alone in zip(batch, single, strict=True):
        assert torch.equal(row, alone)
    assert not torch.equal(single[0], single[1])  # outputs depend on the input, so the check above can fail


def test_batched_forward_left_pads_and_matches_single(tiny_model, inputs) -> None:
    ids, pixels = inputs
    with torch.no_grad():
        batch = tiny_model(ids[:2], images=pixels[:2], modalities=["video"] * 2).logits
        single = tiny_model(ids[1], images=[pixels[1]], modalities=["video"]).logits[0]
    real = single.shape[0]
    torch.testing.assert_close(batch[1, -real:], single, rtol=1e-4, atol=1e-4)


def test_padded_tensor_input_with_attention_mask(tiny_model, inputs) -> None:
    ids, pixels = inputs
    padded = torch.zeros(2, max(ids[0].numel(), ids[1].numel()), dtype=torch.long)
    mask = torch.zeros_like(padded)
    for row, seq in enumerate(ids[:2]):
        padded[row, : seq.numel()], mask[row, : seq.numel()] = seq, 1  # right padding, as a tokenizer may do
    videos = dict(images=pixels[:2], modalities=["video"] * 2)
    from_tensor = tiny_model.generate(padded, attention_mask=mask, max_new_tokens=4, **videos)
    from_list = tiny_model.generate(ids[:2], max_new_tokens=4, **videos)
    assert torch.equal(from_tensor, from_list)


def test_kv_cache_does_not_change_greedy_output(tiny_model, inputs) -> None:
    ids, pixels = inputs[0][0], inputs[1][0]
    kwargs = dict(images=[pixels], modalities=["video"], do_sample=False, max_new_tokens=5, eos_token_id=None)
    assert torch.equal(tiny_model.generate(ids, use_cache=True, **kwargs),
                       tiny_model.generate(ids, use_cache=False, **kwargs))


def test_sampling_is_seeded_and_differs_from_greedy(tiny_model, inputs) -> None:
    ids, pixels = inputs[0][0], inputs[1][0]
    kwargs = dict(images=[pixels], modalities=["video"], max_new_tokens=8, eos_token_id=None)
    torch.manual_seed(0)
    first = tiny_model.generate(ids, do_sample=True, temperature=5.0, **kwargs)
    torch.manual_seed(0)
    second = tiny_model.generate(ids, do_sample=True, temperature=5.0, **kwargs)
    greedy = tiny_model.generate(ids, do_sample=False, **kwargs)
    assert torch.equal(first, second)
    assert not torch.equal(first, greedy)


def test_generation_stops_on_im_end(tiny_model, tiny_model_bundle, inputs) -> None:
    tokenizer = tiny_model_bundle[0]
    assert tiny_model.stop_token_ids[0] == tokenizer.convert_tokens_to_ids("<|im_end|>")
    ids, pixels = inputs[0][0], inputs[1][0]
    video = dict(images=[pixels], modalities=["video"])
    greedy = tiny_model.generate(ids, max_new_tokens=5, eos_token_id=None, **video)[0]
    stopped = tiny_model.generate(ids, max_new_tokens=5, eos_token_id=int(greedy[1]), **video)[0]
    assert stopped.tolist() == greedy[:2].tolist()


def test_placeholder_and_video_counts_must_match(tiny_model, inputs) -> None:
    ids, pixels = inputs
    with pytest.raises(ValueError, match="1 <image> placeholders but 2 videos"):
        tiny_model(ids[0], images=pixels[:2], modalities=["video"] * 2)


def test_only_video_modality_is_served(tiny_model, inputs) -> None:
    ids, pixels = inputs
    with pytest.raises(ValueError, match="modalities must be"):
        tiny_model(ids[0], images=[pixels[0]], modalities=["image"])


def test_text_only_prompt_runs_without_images(tiny_model, tiny_model_bundle) -> None:
    ids = tiny_model_bundle[0]("Hello", return_tensors="pt").input_ids
    assert tiny_model(ids).logits.shape == (1, ids.shape[1], 384)


def test_frame_newline_policy_adds_one_per_frame(tiny_model, inputs) -> None:
    pixels = inputs[1][1]
    tiny_model.newline = "frame"
    with torch.no_grad():
        block = tiny_model.encode_video(pixels, CompressionConfig(method="none")).tokens
    assert block.shape[0] == 3 * (16 + 1)
    torch.testing.assert_close(block[16::17], tiny_model.image_newline.detach().expand(3, -1))


# ---- compress once, ask many times ---------------------------------------------------------------------------
def test_batch_mixing_encoded_and_new_videos_equals_one_by_one(tiny_model, inputs) -> None:
    """A batch may hold already encoded videos next to pixel tensors; each row equals its own run."""
    ids, pixels = inputs
    encoded = tiny_model.encode_video(pixels[0], SCC_QUARTER)
    kwargs = dict(do_sample=False, max_new_tokens=5, eos_token_id=None, compression=SCC_QUARTER)
    mixed = tiny_model.generate(ids, videos=[encoded, pixels[1], pixels[2]], **kwargs)
    for row, (i, p) in zip(mixed, zip(ids, pixels, strict=True), strict=True):
        assert torch.equal(row, tiny_model.generate(i, images=[p], modalities=["video"], **kwargs)[0])


def test_one_encoding_answers_several_prompts_exactly(tiny_model, inputs) -> None:
    """SCC does not look at the text: logits from a reused encoding equal logits from a fresh one."""
    ids, pixels = inputs
    encoded = tiny_model.encode_video(pixels[1], SCC_QUARTER)
    with torch.no_grad():
        for prompt in ids:
            reused = tiny_model(prompt, videos=[encoded]).logits
            fresh = tiny_model(prompt, images=[pixels[1]], modalities=["video"], compression=SCC_QUARTER).logits
            torch.testing.assert_close(reused, fresh, rtol=0, atol=0)


def test_compression_is_per_call_and_the_default_stays(tiny_model, inputs) -> None:
    pixels = inputs[1][0]  # 2 frames x 16 tokens
    default = tiny_model.default_compression
    counts = [tiny_model.encode_video(pixels, CompressionConfig(method="scc", retention_ratio=r)).stats.tokens_out
              for r in (0.5, 0.25, 1.0)]
    assert counts == [16, 8, 32] and tiny_model.default_compression is default
    assert tiny_model.encode_video(pixels).compression is default


def test_vision_in_frame_chunks_equals_all_at_once(tiny_model, inputs) -> None:
    pixels = inputs[1][1]  # 3 frames
    whole = tiny_model.pooled_features(pixels, frame_batch_size=3)
    for size in (1, 2):
        torch.testing.assert_close(tiny_model.pooled_features(pixels, frame_batch_size=size), whole,
                                   rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="frame_batch_size"):
        tiny_model.pooled_features(pixels, frame_batch_size=0)


def test_videos_and_images_are_exclusive_and_typed(tiny_model, inputs) -> None:
    ids, pixels = inputs
    with pytest.raises(ValueError, match="not both"):
        tiny_model(ids[0], images=[pixels[0]], videos=[pixels[0]])
    with pytest.raises(TypeError, match="EncodedVideo"):
        tiny_model(ids[0], videos=["clip.mp4"])
