"""Every servable method through the vLLM plugin, per request and as vLLM's own `--video-pruning-rate` /
`--video-pruning-method` flags, against `llava.model` on the same tiny checkpoint; unservable requests rejected.

Needs vLLM (`bash scripts/test_serving.sh` installs it in .venv-vllm and runs these tests); skipped otherwise. The
engines, the reference and the request helpers are test_serving_vllm.py's.
"""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("vllm", reason="vLLM is not installed: bash scripts/test_serving.sh runs these tests")

import test_serving_vllm as base  # noqa: E402
from test_serving_vllm import embed, generate, reference_blocks, reference_generate, request, video_token_id  # noqa: E402

from llava.serving.budget import SERVABLE_METHODS  # noqa: E402
from llava.serving.plugin import ARCHITECTURE  # noqa: E402

checkpoint, engines, reference, videos = base.checkpoint, base.engines, base.reference, base.videos  # its fixtures
PRUNING_RATE = 0.75  # vLLM's q: the fraction pruned; our r = 1 - q = 0.25
base.ENGINES.update({
    "pruning": {"hf_overrides": {"architectures": [ARCHITECTURE]},
                "video_pruning_rate": PRUNING_RATE, "video_pruning_method": "evs"},
    "stock_pruning": {"video_pruning_rate": PRUNING_RATE, "video_pruning_method": "evs"},
})


@pytest.mark.parametrize("method", ["evs", "vidcom2", "scc"])
def test_per_request_method_gives_our_count_and_our_tokens(engines, reference, checkpoint, videos, method):
    """One batch with two ratios and a two-video prompt: exactly the reference's K tokens and its greedy output."""
    cases = [(["a32"], 0.25), (["b16", "d9"], 0.1)]
    outputs = generate(engines.get("scissor"), [request([videos[n] for n in names], ratio, method)
                                                for names, ratio in cases])
    token = video_token_id(checkpoint)
    for (names, ratio), out in zip(cases, outputs, strict=True):
        frames = [videos[n] for n in names]
        expected = sum(block.shape[0] for block in reference_blocks(reference, frames, ratio, method))
        assert expected < sum(f.shape[0] for f in frames) * 16  # compressed
        assert out.prompt_token_ids.count(token) == expected, (names, ratio)
        assert list(out.outputs[0].token_ids) == reference_generate(reference, frames, ratio, method)


def test_video_embeddings_equal_our_compressed_tokens_for_every_served_method(engines, reference, videos):
    frames = [videos["a32"], videos["b16"], videos["d9"]]
    ratios = [0.1, 0.35, 0.5]
    pixels = [reference[2].preprocess(f)["pixel_values"] for f in frames]
    for method in SERVABLE_METHODS:
        served = embed(engines.get("scissor"), pixels, [method] * len(frames), ratios)
        for got, frames_i, ratio in zip(served, frames, ratios, strict=True):
            want = reference_blocks(reference, [frames_i], ratio, method)[0]
            assert got.shape == want.shape, method
            torch.testing.assert_close(got, want, rtol=0, atol=1e-5, msg=method)


def test_methods_mix_in_one_encoder_batch(engines, reference, videos):
    frames = [videos["a32"], videos["c32"], videos["b16"]]
    methods, ratios = ["evs", "vidcom2", "scc"], [0.25, 0.25, 1.0]
    pixels = [reference[2].preprocess(f)["pixel_values"] for f in frames]
    served = embed(engines.get("scissor"), pixels, methods, ratios)
    for got, frames_i, method, ratio in zip(served, frames, methods, ratios, strict=True):
        torch.testing.assert_close(got, reference_blocks(reference, [frames_i], ratio, method)[0], rtol=0, atol=1e-5)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"method": "foo", "retention_ratio": 0.1}, r"'method' must be one of the served methods \['scc', .*, got 'foo'"),
    ({"method": "dycoke", "retention_ratio": 0.1}, r"'dycoke' cannot be served: its count at a ratio is the nearest"),
    ({"method": "visionzip", "retention_ratio": 0.1}, r"'visionzip' cannot be served: it needs the vision tower's"),
    ({"method": "evs", "tau": 0.9}, r"'tau' \(SCC's paper mode\) cannot be served"),
    ({"method": "vidcom2", "retention_ratio": 2}, r"'retention_ratio'.*must be in \(0, 1\], got 2"),
])
def test_unservable_request_is_rejected_with_the_reason(engines, videos, kwargs, message):
    prompt = request([videos["d9"]])
    prompt["mm_processor_kwargs"] = kwargs
    with pytest.raises(ValueError, match=message):
        generate(engines.get("scissor"), [prompt])


def test_pruning_flags_serve_evs_at_one_minus_the_rate(engines, reference, checkpoint, videos):
    """--video-pruning-rate 0.75 --video-pruning-method evs = method evs at r = 0.25 as the engine default; a
    request's mm_processor_kwargs override it key by key (ratio only, method only)."""
    cases = [(None, None, "evs", 0.25), (0.5, None, "evs", 0.5), (None, "scc", "scc", 0.25),
             (1.0, None, "evs", 1.0)]
    frames = [videos["c32"]]
    outputs = generate(engines.get("pruning"), [request(frames, ratio, method) for ratio, method, _, _ in cases])
    token = video_token_id(checkpoint)
    for (_, _, method, ratio), out in zip(cases, outputs, strict=True):
        expected = reference_blocks(reference, frames, ratio, method)[0].shape[0]
        assert out.prompt_token_ids.count(token) == expected, (method, ratio)
        assert list(out.outputs[0].token_ids) == reference_generate(reference, frames, ratio, method)
    assert outputs[0].prompt_token_ids.count(token) == round(0.25 * 32 * 16)


def test_stock_vllm_ignores_the_pruning_flags_for_llava_onevision(engines, checkpoint, videos):
    """vLLM 0.32 accepts the flags for its LLaVA-OneVision class and serves every token: what the plugin fixes."""
    out = generate(engines.get("stock_pruning"), [request([videos["c32"]])])[0]
    assert out.prompt_token_ids.count(video_token_id(checkpoint)) == 32 * 16 + 1


def test_pruning_flags_with_our_engine_kwargs_fail_at_startup(engines):
    """Two engine defaults for one thing: the engine does not start (the model's constructor raises)."""
    from vllm.distributed.parallel_state import cleanup_dist_env_and_memory

    engines.close()
    base.ENGINES["conflict"] = {**base.ENGINES["pruning"],
                              "mm_processor_kwargs": {"retention_ratio": base.ENGINE_RATIO}}
    try:
        with pytest.raises(ValueError, match=r"--video-pruning-rate 0.75 and --mm-processor-kwargs \['retention_ratio'"
                                             r"\] both set the engine's default compression"):
            engines.get("conflict")
    finally:
        cleanup_dist_env_and_memory()  # the half-started engine's process-wide state
