"""The LLaVA-NeXT names that lmms-eval's stock `llava_onevision` class and LLaVA-Scissor's quick start use, with
their behaviour: checked in-process here against brute-force references (tests/test_lmms_eval_stock.py runs the
stock class itself)."""
from __future__ import annotations

import copy
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from llava.compression import CompressionConfig, compress
from llava.demo_clip import make_demo_clip
from llava.testing.tiny_checkpoint import TinySpec, original_config, write_tiny_checkpoint

SIDE = 7  # tiny tower: 56 px / patch 8 -> 7x7 patches per frame


@pytest.fixture(scope="module")
def scissor_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny original-format checkpoint carrying LLaVA-Scissor's config keys, as their released ones do."""
    spec = TinySpec(use_zip="True", zip_tau=0.9, zip_epsilon=0.05)
    return write_tiny_checkpoint(tmp_path_factory.mktemp("scissor"), "original", seed=0, spec=spec)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_demo_clip(tmp_path_factory.mktemp("clip") / "clip.mp4", num_frames=20, size=(96, 72))


def test_authors_quick_start_runs_with_their_behaviour(scissor_dir: Path, clip: Path) -> None:
    """LLaVA-Scissor's README quick start, call for call (our own wording; their text is CC BY-NC): their imports,
    `load_pretrained_model(path, None, "llava_qwen_zip", device_map=..., attn_implementation="sdpa")`, decord with
    linspace indices, 16 frames, `.half()` pixels, `image_sizes`, greedy `generate`; CPU instead of CUDA."""
    from decord import VideoReader, cpu

    from llava.constants import (  # noqa: F401  (their import line)
        DEFAULT_IM_END_TOKEN,
        DEFAULT_IM_START_TOKEN,
        DEFAULT_IMAGE_TOKEN,
        IGNORE_INDEX,
        IMAGE_TOKEN_INDEX,
    )
    from llava.conversation import SeparatorStyle, conv_templates  # noqa: F401
    from llava.mm_utils import get_model_name_from_path, process_images, tokenizer_image_token  # noqa: F401
    from llava.model.builder import load_pretrained_model

    tokenizer, model, image_processor, max_length = load_pretrained_model(
        str(scissor_dir), None, "llava_qwen_zip", device_map="auto", attn_implementation="sdpa"
    )
    model.eval()
    reader = VideoReader(str(clip), ctx=cpu(0))
    indices = np.linspace(0, len(reader) - 1, 16, dtype=int).tolist()
    video_frames = reader.get_batch(indices).asnumpy()
    frames = image_processor.preprocess(video_frames, return_tensors="pt")["pixel_values"].half().to("cpu")
    conv = copy.deepcopy(conv_templates["qwen_2"])
    conv.append_message(conv.roles[0], f"{DEFAULT_IMAGE_TOKEN}\nDescribe this video in detail.")
    conv.append_message(conv.roles[1], None)
    input_ids = tokenizer_image_token(conv.get_prompt(), tokenizer, IMAGE_TOKEN_INDEX, return_tensors="pt")
    cont = model.generate(input_ids.unsqueeze(0).to("cpu"), images=[frames],
                          image_sizes=[frame.size for frame in video_frames], do_sample=False, temperature=0,
                          max_new_tokens=6, modalities=["video"])
    text_outputs = tokenizer.batch_decode(cont, skip_special_tokens=True)
    # ---- what it computed: their defaults (fp16 model, the checkpoint's tau / epsilon, fp16 arithmetic) ----
    assert isinstance(text_outputs[0], str) and max_length == model.config.text.max_position_embeddings
    assert model.dtype == torch.float16
    expected = CompressionConfig(method="scc", tau=0.9, epsilon=0.05, precision="input")
    assert model.default_compression == expected
    with torch.no_grad():
        pooled = model.pooled_features(frames)  # (16, 16, D) fp16
    reference = compress(pooled, expected).tokens
    stats = model.encode_video(frames).stats
    assert stats.tokens_in == 16 * 16 and stats.tokens_out == reference.shape[0] < stats.tokens_in


# ---- llava.mm_utils ---------------------------------------------------------------------------------------------
def _square_reference(image: Image.Image, fill: int) -> np.ndarray:
    """Brute force: a filled square canvas of the longer side with the image centred on it."""
    pixels = np.asarray(image.convert("RGB"))
    height, width, _ = pixels.shape
    side = max(height, width)
    canvas = np.full((side, side, 3), fill, dtype=np.uint8)
    top, left = (side - height) // 2, (side - width) // 2
    canvas[top:top + height, left:left + width] = pixels
    return canvas


def test_process_images_pads_to_square_with_the_mean_colour() -> None:
    from llava.mm_utils import process_images
    from llava.model.image_processor import SiglipVideoProcessor

    processor = SiglipVideoProcessor(image_size=56)
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in ((30, 47), (41, 20),
                                                                                                (25, 25))]
    config = type("Config", (), {"image_aspect_ratio": "pad"})()
    padded = process_images(images, processor, config)
    fill = int(processor.image_mean[0] * 255)
    expected = torch.cat([processor.preprocess(_square_reference(im, fill))["pixel_values"] for im in images])
    assert padded.shape == (3, 3, 56, 56)
    torch.testing.assert_close(padded, expected, rtol=0, atol=0)
    config.image_aspect_ratio = None
    plain = process_images(images, processor, config)
    torch.testing.assert_close(plain, processor.preprocess(images)["pixel_values"], rtol=0, atol=0)
    assert not torch.equal(plain[:2], padded[:2]) and torch.equal(plain[2], padded[2])  # the square one is unpadded


def test_process_images_refuses_what_it_cannot_do() -> None:
    from llava.mm_utils import process_images
    from llava.model.image_processor import SiglipVideoProcessor

    processor, image = SiglipVideoProcessor(image_size=56), Image.new("RGB", (20, 30))
    with pytest.raises(ValueError, match="anyres_max_9.*video only"):
        process_images([image], processor, type("C", (), {"image_aspect_ratio": "anyres_max_9"})())
    with pytest.raises(TypeError, match="PIL images"):
        process_images([np.zeros((4, 4, 3), np.uint8)], processor, None)


def test_keywords_stopping_criteria_flags_each_row(tiny_model_bundle) -> None:
    from llava.mm_utils import KeywordsStoppingCriteria

    tokenizer = tiny_model_bundle[0]
    encode = lambda text: tokenizer(text, add_special_tokens=False).input_ids  # noqa: E731
    rows = [encode("the answer is A<|im_end|>"), encode("<|im_end|> the answer is A"), encode("xx stop here"),
            encode("xxx the answer")]
    width = max(map(len, rows))
    ids = torch.tensor([[0] * (width - len(r)) + r for r in rows])  # left padded, as generate sees them
    criteria = KeywordsStoppingCriteria(["<|im_end|>", "stop here"], tokenizer, ids)
    flags = criteria(ids, None)
    assert flags.dtype == torch.bool and flags.tolist() == [True, False, True, False]
    with pytest.raises(ValueError, match="keywords"):
        KeywordsStoppingCriteria([], tokenizer, ids)


def test_keywords_stopping_criteria_stops_generation(tiny_model, tiny_model_bundle, frames_factory,
                                                    prompt_factory) -> None:
    from llava.mm_utils import KeywordsStoppingCriteria, tokenizer_image_token

    tokenizer, _, processor, _ = tiny_model_bundle
    ids = tokenizer_image_token(prompt_factory("What happens?"), tokenizer, return_tensors="pt")[None]
    video = dict(images=[processor.preprocess(frames_factory(2))["pixel_values"]], modalities=["video"])
    free = tiny_model.generate(ids, do_sample=False, max_new_tokens=16, eos_token_id=None, **video)[0]
    pieces = [tokenizer.decode(token) for token in free]  # the tiny vocabulary is one token per byte
    printable = [piece for piece in pieces[1:] if piece and piece.isascii() and piece.isprintable()]
    assert printable, "the generated bytes hold no printable character to use as a keyword"
    keyword = printable[0]
    texts = [tokenizer.decode(free[:n + 1]) for n in range(len(free))]
    stop_at = next(n for n, text in enumerate(texts) if text.endswith(keyword))  # brute force
    criteria = [KeywordsStoppingCriteria([keyword], tokenizer, ids)]
    stopped = tiny_model.generate(ids, do_sample=False, max_new_tokens=16, eos_token_id=None,
                                  stopping_criteria=criteria, **video)[0]
    assert stop_at + 1 < len(free) and stopped.tolist() == free[:stop_at + 1].tolist()


# ---- llava.conversation ---------------------------------------------------------------------------------------
def test_separator_styles_and_templates_as_lmms_eval_reads_them() -> None:
    from llava.conversation import Conversation, SeparatorStyle, conv_templates

    names = {"SINGLE", "TWO", "MPT", "PLAIN", "CHATML", "LLAMA_2", "LLAMA_3", "QWEN", "GEMMA"}
    assert names <= set(SeparatorStyle.__members__)
    conv = conv_templates["qwen_2"].copy()
    stop_str = conv.sep if conv.sep_style != SeparatorStyle.TWO else conv.sep2  # lmms-eval's expression
    assert stop_str == "<|im_end|>" and conv.sep2 is None
    with pytest.raises(ValueError, match="CHATML"):
        Conversation(system="s", roles=("u", "a"), sep_style=SeparatorStyle.TWO).get_prompt()
    with pytest.raises(KeyError, match="qwen_2"):
        conv_templates["vicuna_v1"]


# ---- pooling: overwrite_config and per-call assignment ------------------------------------------------------------
def _pool_reference(features: torch.Tensor, mode: str, stride: int) -> torch.Tensor:
    """LLaVA-NeXT's get_2dPool written out on the [F, side, side, D] grid."""
    n, p, d = features.shape
    side = math.isqrt(p)
    grid = features.view(n, side, side, d).permute(0, 3, 1, 2)
    if mode == "bilinear":
        out = F.interpolate(grid, size=[math.ceil(side / stride)] * 2, mode="bilinear")
    else:
        out = (F.avg_pool2d if mode == "average" else F.max_pool2d)(grid, stride)
    return out.permute(0, 2, 3, 1).reshape(n, -1, d)


@pytest.mark.parametrize(("stride", "tokens"), [(2, 196), (3, 81), (4, 49)])
def test_pool_stride_on_the_real_grid(stride: int, tokens: int) -> None:
    from llava.model.modeling import pool_frames

    features = torch.randn(2, 27 * 27, 8)
    pooled = pool_frames(features, "bilinear", stride)
    assert pooled.shape == (2, tokens, 8)
    torch.testing.assert_close(pooled, _pool_reference(features, "bilinear", stride))


def test_pool_settings_take_effect_at_the_next_call(tiny_original_dir: Path, frames_factory) -> None:
    from llava.model.builder import load_pretrained_model

    _, model, processor, _ = load_pretrained_model(str(tiny_original_dir), device_map="cpu", torch_dtype="float32",
                                                   overwrite_config={"mm_spatial_pool_stride": 4})
    pixels = processor.preprocess(frames_factory(3))["pixel_values"]
    with torch.no_grad():
        encoded = model.encode_frames(pixels)
        for mode, stride in (("bilinear", 4), ("bilinear", 3), ("average", 2), ("max", 3), ("bilinear", 2)):
            if (mode, stride) != ("bilinear", 4):  # the first comes from overwrite_config
                model.config.mm_spatial_pool_mode, model.config.mm_spatial_pool_stride = mode, stride
            torch.testing.assert_close(model.pooled_features(pixels), _pool_reference(encoded, mode, stride))
            tokens = model.encode_video(pixels).tokens.shape[0]
            side = math.ceil(SIDE / stride) if mode == "bilinear" else SIDE // stride
            assert tokens == 3 * side * side + 1  # + the one newline of an uncompressed OneVision video
    with pytest.raises(ValueError, match="mm_spatial_pool_stride"):
        model.config.mm_spatial_pool_stride = 0
    with pytest.raises(ValueError, match="mm_spatial_pool_mode"):
        model.config.mm_spatial_pool_mode = "nearest"


# ---- builder: customized_config, dtype, generation defaults, model types ------------------------------------------
def test_customized_config_replaces_config_json(tiny_original_dir: Path, tmp_path: Path) -> None:
    from transformers import PretrainedConfig

    from llava.model.builder import load_pretrained_model

    raw = {**original_config(TinySpec()), "mm_use_zip": True, "mm_zip_tau": 0.5}
    path = tmp_path / "custom.json"
    path.write_text(json.dumps(raw))
    load = lambda **kw: load_pretrained_model(str(tiny_original_dir), None, "llava_qwen", device_map="cpu",  # noqa
                                              torch_dtype="float32", **kw)[1]
    assert load().default_compression.method == "none"  # config.json on disk has no LLaVA-Scissor keys
    for custom in (raw, str(path), PretrainedConfig(**raw)):
        assert load(customized_config=custom).default_compression.tau == 0.5
    over = load(customized_config=str(path), overwrite_config={"mm_zip_tau": 0.7, "mm_spatial_pool_stride": 3})
    assert (over.default_compression.tau, over.config.pool_stride) == (0.7, 3)  # overwrite_config goes on top
    with pytest.raises(ValueError, match="not a file"):
        load(customized_config=str(tmp_path / "missing.json"))
    with pytest.raises(TypeError, match="customized_config"):
        load(customized_config=42)


@pytest.mark.parametrize(("use_zip", "by_name", "by_key"), [
    (None, True, False), (True, True, True), (False, False, False), ("false", True, False), ("true", True, True),
])
def test_mm_use_zip_as_each_stack_reads_it(use_zip: object, by_name: bool, by_key: bool) -> None:
    """With "zip" in model_name, LLaVA-Scissor's truthiness (the string "false" is on; absent is on because the
    name asks for it); without, our reading of the key."""
    from llava.model.model_config import parse_model_config, resolve_compression

    config = parse_model_config(original_config(TinySpec(use_zip=use_zip)))
    assert (resolve_compression(config, None, zip_requested=True).method == "scc") is by_name
    assert (resolve_compression(config, None, zip_requested=False).method == "scc") is by_key


def test_checkpoint_compression_fallbacks_and_precision_key() -> None:
    from llava.model.model_config import parse_model_config, resolve_compression

    absent = resolve_compression(parse_model_config(original_config(TinySpec())), None, zip_requested=True)
    assert (absent.tau, absent.epsilon, absent.precision) == (0.95, 0.05, "input")  # LLaVA-Scissor's fallbacks
    raw = {**original_config(TinySpec(zip_tau=0.9, zip_epsilon=0.1)), "mm_zip_precision": "float32"}
    given = resolve_compression(parse_model_config(raw), None, zip_requested=True)
    assert (given.tau, given.epsilon, given.precision) == (0.9, 0.1, "float32")
    run = CompressionConfig(tau=0.8)
    assert resolve_compression(parse_model_config(raw), run, zip_requested=True) is run  # float32 by default
    with pytest.raises(ValueError, match="mm_zip_precision"):
        parse_model_config({**raw, "mm_zip_precision": "fp16"})


def test_generation_config_json_is_honoured(tiny_original_dir: Path, tmp_path: Path, frames_factory,
                                            prompt_factory) -> None:
    from llava.mm_utils import tokenizer_image_token
    from llava.model.builder import load_pretrained_model

    with_file = tmp_path / "with_generation_config"
    shutil.copytree(tiny_original_dir, with_file)
    (with_file / "generation_config.json").write_text(json.dumps({"repetition_penalty": 50.0, "eos_token_id": 258}))
    outputs = {}
    for name, path, kwargs in (("file", with_file, {}), ("explicit", tiny_original_dir, {"repetition_penalty": 50.0}),
                               ("plain", tiny_original_dir, {})):
        tokenizer, model, processor, _ = load_pretrained_model(str(path), device_map="cpu", torch_dtype="float32")
        ids = tokenizer_image_token(prompt_factory("What happens?"), tokenizer, return_tensors="pt")[None]
        pixels = processor.preprocess(frames_factory(2))["pixel_values"]
        outputs[name] = model.generate(ids, images=[pixels], modalities=["video"], do_sample=False,
                                       max_new_tokens=40, eos_token_id=None, **kwargs)
    plain = outputs["plain"][0].tolist()
    assert len(set(plain)) < len(plain), "the plain output repeats no token, so a penalty could not change it"
    assert torch.equal(outputs["file"], outputs["explicit"])
    assert not torch.equal(outputs["file"], outputs["plain"])


def test_llava_qwen_model_type_reads_through_auto_config(tiny_original_dir: Path, tmp_path: Path) -> None:
    """lmms-eval calls `AutoConfig.from_pretrained` on the checkpoint; LLaVA-NeXT-trained ones say `llava_qwen`."""
    from transformers import AutoConfig

    import llava.model.builder  # noqa: F401  (registers the model types, as LLaVA-NeXT's import does)

    for model_type in ("llava_qwen", "llava_qwen_zip"):
        path = tmp_path / model_type
        shutil.copytree(tiny_original_dir, path)
        (path / "config.json").write_text(json.dumps({**original_config(TinySpec()), "model_type": model_type}))
        assert AutoConfig.from_pretrained(str(path)).model_type == model_type
        assert llava.model.builder.load_pretrained_model(str(path), device_map="cpu")[1].config.source_format == \
            "original"


# ---- what the stock class must not do silently --------------------------------------------------------------------
def test_image_requests_and_per_frame_placeholders_fail_clearly(tiny_model, tiny_model_bundle, frames_factory,
                                                               prompt_factory) -> None:
    from llava.mm_utils import tokenizer_image_token

    tokenizer, _, processor, _ = tiny_model_bundle
    pixels = processor.preprocess(frames_factory(3))["pixel_values"]
    ids = tokenizer_image_token(prompt_factory("What happens?"), tokenizer, return_tensors="pt")[None]
    with pytest.raises(ValueError, match="image inputs are not supported"):  # lmms-eval's image path: no modalities
        tiny_model.generate(ids, images=pixels, image_sizes=[(40, 48)], max_new_tokens=2)
    multiple = prompt_factory("What happens?").replace("<image>", " ".join(["<image>"] * 3))  # token_strategy=multiple
    ids = tokenizer_image_token(multiple, tokenizer, return_tensors="pt")[None]
    with pytest.raises(ValueError, match="3 <image> placeholders but 1 videos"):
        tiny_model.generate(ids, images=[pixels], modalities=["video"], max_new_tokens=2)


def test_labels_fail_clearly(tiny_model, tiny_model_bundle, frames_factory, prompt_factory) -> None:
    """lmms-eval's loglikelihood path passes labels aligned with input_ids; the visual tokens lengthen the prompt."""
    from llava.mm_utils import tokenizer_image_token

    tokenizer, _, processor, _ = tiny_model_bundle
    ids = tokenizer_image_token(prompt_factory("What happens?"), tokenizer, return_tensors="pt")[None]
    pixels = processor.preprocess(frames_factory(2))["pixel_values"]
    with pytest.raises(ValueError, match="labels are not supported"):
        tiny_model(ids, images=[pixels], modalities=["video"], labels=ids.clamp(min=0))
