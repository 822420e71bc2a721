"""The vLLM plugin on a tiny vLLM-ready checkpoint, in-process on the CPU, against `llava.model` and stock vLLM.

Needs vLLM (`bash scripts/test_serving.sh` installs it in .venv-vllm and runs these tests); skipped otherwise.
Frames are already at the tower's 56 px, so vLLM's torchvision resize and our PIL resize are both the identity and
the two pipelines see the same pixels.
"""
from __future__ import annotations

import gc
import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # engine in this process: fast start, apply_model
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB
vllm = pytest.importorskip("vllm", reason="vLLM is not installed: bash scripts/test_serving.sh runs these tests")

from llava.compression import CompressionConfig  # noqa: E402
from llava.conversation import conv_templates  # noqa: E402
from llava.mm_utils import tokenizer_image_token  # noqa: E402
from llava.serving.plugin import ARCHITECTURE, STOCK_ARCHITECTURE  # noqa: E402
from llava.testing.tiny_checkpoint import vllm_spec, write_tiny_checkpoint  # noqa: E402

SIZE = 56  # vllm_spec's frame size: 7 x 7 patches -> 4 x 4 = 16 pooled tokens per frame
ENGINE_RATIO = 0.1
QUESTION = "What happens in this video?"
NEW_TOKENS = 8
ENGINE_ARGS = dict(dtype="float32", enforce_eager=True, max_model_len=2048, seed=0,
                   limit_mm_per_prompt={"image": 0, "video": 2})


ENGINES = {  # engine kinds the tests compare
    "scissor": {"hf_overrides": {"architectures": [ARCHITECTURE]},
                "mm_processor_kwargs": {"retention_ratio": ENGINE_RATIO}},
    "stock": {},
    "chunked": {"hf_overrides": {"architectures": [ARCHITECTURE]},
                "mm_processor_kwargs": {"retention_ratio": ENGINE_RATIO},
                "enable_chunked_prefill": True, "max_num_batched_tokens": 48},
}


class Engines:
    """One live engine at a time: an in-process vLLM engine holds process-wide distributed state, so the next one
    can start only after the last is shut down. Tests ask for a kind; switching kinds costs one start (~10 s)."""

    def __init__(self, checkpoint: Path) -> None:
        self.checkpoint = checkpoint
        self.kind: str | None = None
        self.llm = None

    def get(self, kind: str):
        if kind != self.kind:
            self.close()
            self.llm = vllm.LLM(model=str(self.checkpoint), **ENGINE_ARGS, **ENGINES[kind])
            self.kind = kind
        return self.llm

    def close(self) -> None:
        from vllm.distributed.parallel_state import cleanup_dist_env_and_memory

        if self.llm is not None:
            self.llm.llm_engine.engine_core.shutdown()
            self.llm, self.kind = None, None
            gc.collect()
            cleanup_dist_env_and_memory()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny_vllm"), "hf", spec=vllm_spec(), processor_files=True)


@pytest.fixture(scope="module")
def engines(checkpoint: Path):
    engines = Engines(checkpoint)
    yield engines
    engines.close()


@pytest.fixture
def engine(engines: Engines):
    return engines.get("scissor")


@pytest.fixture(scope="module")
def reference(checkpoint: Path):
    """(tokenizer, our model, our video processor) on the same weights, fp32 CPU."""
    from llava.model.builder import load_pretrained_model

    tokenizer, model, processor, _ = load_pretrained_model(str(checkpoint), device_map="cpu", torch_dtype="float32")
    return tokenizer, model, processor


@pytest.fixture
def videos(frames_factory) -> dict[str, object]:
    """Named uint8 videos [F, 56, 56, 3] of different lengths and contents."""
    return {name: frames_factory(n, seed=seed, height=SIZE, width=SIZE)
            for name, n, seed in (("a32", 32, 1), ("b16", 16, 2), ("c32", 32, 3), ("d9", 9, 4))}


# ---- the reference: llava.model's own stages -------------------------------------------------------------------
def compression(ratio: float, method: str = "scc") -> CompressionConfig:
    return CompressionConfig(method="none") if ratio == 1.0 else CompressionConfig(method=method, retention_ratio=ratio)


def reference_blocks(reference, frames: list, ratio: float, method: str = "scc") -> list[torch.Tensor]:
    """Our model's visual block per video ([K, D], or [F*T + 1, D] with the newline when not compressing)."""
    _, model, processor = reference
    pixels = [processor.preprocess(f)["pixel_values"] for f in frames]
    with torch.no_grad():
        return [video.tokens for video in model.encode_videos(pixels, compression(ratio, method))]


def reference_generate(reference, frames: list, ratio: float, method: str = "scc") -> list[int]:
    """Our model's greedy tokens for one prompt holding every video of `frames`."""
    tokenizer, model, processor = reference
    ids = tokenizer_image_token(chat_prompt(len(frames), "<image>"), tokenizer, return_tensors="pt")
    pixels = [processor.preprocess(f)["pixel_values"] for f in frames]
    out = model.generate(ids, videos=pixels, compression=compression(ratio, method), do_sample=False,
                         max_new_tokens=NEW_TOKENS, eos_token_id=None)
    return out[0].tolist()


def chat_prompt(n_videos: int, placeholder: str) -> str:
    conv = conv_templates["qwen_2"].copy()
    conv.append_message(conv.roles[0], f"{placeholder}\n" * n_videos + QUESTION)
    conv.append_message(conv.roles[1], None)
    return conv.get_prompt()


# ---- vLLM side ------------------------------------------------------------------------------------------------
def request(frames: list, ratio: float | None = None, method: str | None = None) -> dict:
    """A prompt holding every video of `frames`; mm_processor_kwargs only for what is given."""
    prompt = {"prompt": chat_prompt(len(frames), "<video>"),
              "multi_modal_data": {"video": frames[0] if len(frames) == 1 else list(frames)}}
    kwargs = {key: value for key, value in (("retention_ratio", ratio), ("method", method)) if value is not None}
    if kwargs:
        prompt["mm_processor_kwargs"] = kwargs
    return prompt


def embed(llm, pixels: list[torch.Tensor], methods: list[str], ratios: list[float]) -> list[torch.Tensor]:
    """The engine model's video embeddings for preprocessed pixels, with the fields the processor would attach."""
    from llava.compression import METHODS
    from llava.serving.vllm_model import METHOD_FIELD, RATIO_FIELD

    fields = {RATIO_FIELD: torch.tensor(ratios, dtype=torch.float64),
              METHOD_FIELD: torch.tensor([METHODS.index(m) for m in methods], dtype=torch.int64)}

    def run(model) -> list[torch.Tensor]:
        with torch.no_grad():
            return [e.cpu() for e in model.embed_multimodal(pixel_values_videos=pixels, **fields)]

    return llm.apply_model(run)[0]


def generate(llm, requests: list[dict]) -> list:
    params = vllm.SamplingParams(max_tokens=NEW_TOKENS, temperature=0.0, ignore_eos=True)
    return llm.generate(requests, params, use_tqdm=False)


def video_token_id(checkpoint: Path) -> int:
    import json

    return json.loads((checkpoint / "config.json").read_text())["video_token_index"]


# ---- tests ----------------------------------------------------------------------------------------------------
def test_prompts_hold_exactly_our_token_counts_and_generate_our_tokens(engine, reference, checkpoint, videos):
    """Engine default, per-request ratios and r = 1.0, in one batch (one encoder batch with mixed ratios)."""
    cases = [(["a32"], None), (["c32"], 0.25), (["d9"], 1.0), (["a32", "b16"], None), (["b16", "d9"], 0.5)]
    outputs = generate(engine, [request([videos[n] for n in names], ratio) for names, ratio in cases])
    token = video_token_id(checkpoint)
    for (names, ratio), out in zip(cases, outputs, strict=True):
        frames = [videos[n] for n in names]
        effective = ENGINE_RATIO if ratio is None else ratio
        expected = sum(block.shape[0] for block in reference_blocks(reference, frames, effective))
        assert out.prompt_token_ids.count(token) == expected, (names, ratio)
        assert list(out.outputs[0].token_ids) == reference_generate(reference, frames, effective), (names, ratio)
    assert len({tuple(out.outputs[0].token_ids) for out in outputs}) > 1  # outputs depend on the input


def test_video_embeddings_equal_our_compressed_tokens(engine, reference, videos):
    frames = [videos["a32"], videos["b16"], videos["d9"]]
    ratios = [0.1, 0.35, 1.0]
    pixels = [reference[2].preprocess(f)["pixel_values"] for f in frames]
    served = embed(engine, pixels, ["scc"] * len(frames), ratios)
    for got, frames_i, ratio in zip(served, frames, ratios, strict=True):
        want = reference_blocks(reference, [frames_i], ratio)[0]
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"retention_ratio": 1.5}, r"retention_ratio.*must be in \(0, 1\], got 1.5"),
    ({"retention_ratio": 0}, r"retention_ratio.*must be in \(0, 1\], got 0"),
    ({"retention_ratio": "0.1"}, r"retention_ratio.*must be a number"),
    ({"tau": 0.9}, r"'tau' \(SCC's paper mode\) cannot be served"),
])
def test_bad_ratio_is_rejected_with_the_reason(engine, videos, kwargs, message):
    prompt = request([videos["d9"]])
    prompt["mm_processor_kwargs"] = kwargs
    with pytest.raises(ValueError, match=message):
        generate(engine, [prompt])


def test_encoder_budget_covers_the_configured_frames_uncompressed(engine):
    """Stock vLLM sizes the encoder cache for 16-frame videos (and rejects 32-frame ones at r = 1.0 at 384 px);
    the plugin sizes it, and the profiling video, for limit_mm_per_prompt's num_frames, 32 by default."""
    from vllm.multimodal import MULTIMODAL_REGISTRY

    info = MULTIMODAL_REGISTRY.create_processor(engine.llm_engine.model_config).info
    per_frame = (SIZE // vllm_spec().patch_size + 1) // 2
    per_frame *= per_frame
    assert info.max_frames() == 32
    assert info.get_num_frames_with_most_features(2048, {"video": 1}) == 32
    assert info.get_mm_max_tokens_per_item(2048, {"video": 1})["video"] == 32 * per_frame + 1
    assert info.get_mm_max_tokens_per_item(100, {"video": 1})["video"] == 100  # never above the model length
    assert info.get_mm_max_tokens_per_item(2048, {"image": 1})["image"] == info.get_max_image_tokens()


def test_opt_in_replaces_the_stock_architecture(monkeypatch):
    from vllm import ModelRegistry

    from llava.serving import plugin
    from llava.serving.vllm_model import LlavaScissorOnevisionForConditionalGeneration

    stock = ModelRegistry.models[STOCK_ARCHITECTURE]
    try:
        monkeypatch.setenv(plugin.REPLACE_STOCK_ENV, "1")
        plugin.register()
        plugin.register()  # idempotent: vLLM calls it in every process
        for name in (ARCHITECTURE, STOCK_ARCHITECTURE):
            assert ModelRegistry.models[name].load_model_cls() is LlavaScissorOnevisionForConditionalGeneration
    finally:
        ModelRegistry.models[STOCK_ARCHITECTURE] = stock
    assert ModelRegistry.models[STOCK_ARCHITECTURE].load_model_cls() is not \
        LlavaScissorOnevisionForConditionalGeneration


# ---- comparisons across engines (last: each switch of engine costs a start) ------------------------------------
def test_uncompressed_ratio_equals_stock_vllm(engines, videos):
    # equal frame counts only: stock vLLM 0.32 returns 3-D embeddings for a batch of videos of different lengths
    # and its own sanity check then fails (the plugin returns [K, D] per video, so mixed lengths work there)
    requests = [request([videos["c32"]]), request([videos["a32"], videos["c32"]])]
    ours = generate(engines.get("scissor"), [{**r, "mm_processor_kwargs": {"retention_ratio": 1.0}} for r in requests])
    stock = generate(engines.get("stock"), requests)
    for a, b in zip(ours, stock, strict=True):
        assert a.prompt_token_ids == b.prompt_token_ids
        assert a.outputs[0].token_ids == b.outputs[0].token_ids


def test_chunked_prefill_equals_unchunked(engines, videos):
    requests = [request([videos["a32"]], 0.25), request([videos["c32"], videos["b16"]])]
    whole = generate(engines.get("scissor"), requests)
    chunked = generate(engines.get("chunked"), requests)
    budget = ENGINES["chunked"]["max_num_batched_tokens"]
    for a, b in zip(whole, chunked, strict=True):
        assert len(a.prompt_token_ids) > 2 * budget  # the prompt really is prefilled in several steps
        assert a.prompt_token_ids == b.prompt_token_ids
        assert a.outputs[0].token_ids == b.outputs[0].token_ids
