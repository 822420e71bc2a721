"""Every registered compression method through the one pipeline, on a tiny checkpoint (fp32, CPU): batched
generation equals one prompt at a time, and a video encoded once answers a second question exactly as a fresh
encoding does (no method reads the text before the LLM; FastV and DyCoke's decode stage act inside it, after the
encoded block). `CONFIGS` must name every method in `METHOD_SPECS`, so a new method is covered or fails here."""
from __future__ import annotations

import pytest
import torch

from llava.config_types import METHOD_SPECS, CompressionConfig
from llava.conversation import video_prompt_ids

CONFIGS: dict[str, CompressionConfig] = {
    "scc": CompressionConfig(method="scc", retention_ratio=0.3),
    "random": CompressionConfig(method="random", retention_ratio=0.3),
    "uniform": CompressionConfig(method="uniform", retention_ratio=0.3),
    "l2norm": CompressionConfig(method="l2norm", retention_ratio=0.3),
    "none": CompressionConfig(method="none"),
    "pllava": CompressionConfig(method="pllava", pool_shape=(2, 2, 3)),
    "visionzip": CompressionConfig(method="visionzip", retention_ratio=0.3),
    "dycoke": CompressionConfig(method="dycoke", dycoke_k=0.5, dycoke_p=0.5, dycoke_l=1),
    "evs": CompressionConfig(method="evs", retention_ratio=0.3),
    "vidcom2": CompressionConfig(method="vidcom2", retention_ratio=0.3),
    "fastv": CompressionConfig(method="fastv", retention_ratio=0.3, fastv_layer=1),
}
GENERATION = {"do_sample": False, "max_new_tokens": 4}


def test_every_registered_method_is_covered() -> None:
    assert set(CONFIGS) == set(METHOD_SPECS)


def _pixels(frames: int, seed: int) -> torch.Tensor:
    return torch.randn(frames, 3, 56, 56, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("method", sorted(CONFIGS))
def test_batched_generation_equals_one_by_one(tiny_model_bundle, method: str) -> None:
    tokenizer, model = tiny_model_bundle[0], tiny_model_bundle[1]
    config = CONFIGS[method]
    videos = [_pixels(4, 1), _pixels(6, 2)]
    prompts = [video_prompt_ids(q, tokenizer) for q in ("What moves?", "Which colour is the ball at the end?")]
    together = model.generate(prompts, images=videos, modalities=["video", "video"], compression=config,
                              **GENERATION)
    for row, (ids, video) in enumerate(zip(prompts, videos, strict=True)):
        alone = model.generate(ids[None], images=[video], modalities=["video"], compression=config, **GENERATION)
        n = alone.shape[1]
        assert torch.equal(together[row, :n], alone[0]), f"{method}: row {row} differs from its one-by-one run"


@pytest.mark.parametrize("method", sorted(CONFIGS))
def test_an_encoded_video_answers_every_question_as_a_fresh_encoding(tiny_model_bundle, method: str) -> None:
    tokenizer, model = tiny_model_bundle[0], tiny_model_bundle[1]
    config = CONFIGS[method]
    pixels = _pixels(4, 3)
    encoded = model.encode_video(pixels, config)
    for question in ("What moves?", "What happens last?"):
        ids = video_prompt_ids(question, tokenizer)[None]
        fresh = model.generate(ids, images=[pixels], modalities=["video"], compression=config, **GENERATION)
        assert torch.equal(model.generate(ids, videos=[encoded], **GENERATION), fresh), method
