"""The serving plugin's vLLM-free parts: ratio parsing, token counts, registration names, vLLM-ready checkpoints.

These run in the package's own environment; the engine tests are in test_serving_vllm.py / test_serving_server.py.
"""
from __future__ import annotations

import json

import pytest
import torch

from llava.compression import CompressionConfig, compress
from llava.conversation import video_prompt_ids
from llava.serving import budget, plugin
from llava.testing.tiny_checkpoint import TinySpec, main, vllm_spec, write_tiny_checkpoint


@pytest.mark.parametrize(("frames", "tokens", "ratio"), [
    (32, 196, 0.1), (8, 196, 0.35), (1, 196, 0.001), (9, 16, 0.5), (16, 16, 0.25), (7, 3, 0.999),
])
def test_compressed_count_is_what_compress_returns(frames: int, tokens: int, ratio: float) -> None:
    features = torch.randn(frames, tokens, 8, generator=torch.Generator().manual_seed(frames))
    kept = compress(features, CompressionConfig(retention_ratio=ratio)).tokens.shape[0]
    assert budget.video_token_count(frames, tokens, ratio) == kept


def test_uncompressed_count_is_stock_llava_onevision() -> None:
    # stock vLLM: pooled tokens of every frame plus one image_newline
    for frames, tokens in ((32, 196), (1, 16), (9, 16)):
        assert budget.video_token_count(frames, tokens, 1.0) == frames * tokens + 1


def test_ratio_in_effect_and_its_errors() -> None:
    assert budget.retention_ratio({}) == 1.0
    assert budget.retention_ratio({"retention_ratio": None, "num_frames": 8}) == 1.0
    assert budget.retention_ratio({"retention_ratio": 0.1}) == 0.1
    assert budget.retention_ratio({"retention_ratio": 1}) == 1.0
    for bad, reason in ((0, r"in \(0, 1\], got 0"), (1.5, r"in \(0, 1\], got 1.5"), (float("nan"), "got nan"),
                        ("0.1", "must be a number"), (True, "must be a number")):
        with pytest.raises(ValueError, match=f"mm_processor_kwargs 'retention_ratio'.*{reason}"):
            budget.retention_ratio({"retention_ratio": bad})
    with pytest.raises(ValueError, match="'tau' .* cannot be served.*Use 'retention_ratio'"):
        budget.retention_ratio({"tau": 0.9})
    with pytest.raises(ValueError, match="'tau'"):
        budget.retention_ratio({"tau": 0.9, "retention_ratio": 0.1})


def test_compression_only_below_one() -> None:
    assert budget.compression_for(1.0) is None
    assert budget.compression_for(0.25) == CompressionConfig(retention_ratio=0.25)


def test_empty_video_is_rejected() -> None:
    with pytest.raises(ValueError, match="0 x 196"):
        budget.video_token_count(0, 196, 0.1)


def test_serving_keys_never_reach_the_hf_processor() -> None:
    kwargs = {"retention_ratio": 0.1, "tau": 0.9, "do_resize": True}
    assert budget.without_serving_keys(kwargs) == {"do_resize": True}


def test_plugin_registers_ours_and_the_stock_name_only_on_opt_in() -> None:
    assert plugin.architectures_to_register({}) == [plugin.ARCHITECTURE]
    assert plugin.architectures_to_register({plugin.REPLACE_STOCK_ENV: "0"}) == [plugin.ARCHITECTURE]
    assert plugin.architectures_to_register({plugin.REPLACE_STOCK_ENV: "1"}) == [
        plugin.ARCHITECTURE, plugin.STOCK_ARCHITECTURE]
    with pytest.raises(ValueError, match="must be 1 .* or 0, got 'yes'"):
        plugin.architectures_to_register({plugin.REPLACE_STOCK_ENV: "yes"})
    module, name = plugin.MODEL_CLASS.split(":")
    assert module == "llava.serving.vllm_model" and name == plugin.ARCHITECTURE


def test_entry_point_is_declared() -> None:
    from importlib.metadata import entry_points

    points = {p.name: p.value for p in entry_points(group="vllm.general_plugins")}
    assert points.get("llava_scissor") == "llava.serving.plugin:register"


# ---- vLLM-ready tiny checkpoints -------------------------------------------------------------------------------
def test_default_tiny_spec_is_unchanged() -> None:
    spec = TinySpec()
    assert (spec.num_attention_heads, spec.num_key_value_heads, spec.max_position_embeddings) == (4, 2, 4096)


def test_vllm_ready_checkpoint(tmp_path) -> None:
    out = write_tiny_checkpoint(tmp_path, "hf", spec=vllm_spec(), processor_files=True)
    config = json.loads((out / "config.json").read_text())
    text = config["text_config"]
    assert text["hidden_size"] // text["num_attention_heads"] >= 32  # vLLM's CPU attention needs head_dim >= 32
    assert text["max_position_embeddings"] > 6319  # a 32-frame prompt at 384 px
    processor = json.loads((out / "processor_config.json").read_text())
    assert processor["processor_class"] == "LlavaOnevisionProcessor"
    size = config["vision_config"]["image_size"]
    for part in ("image_processor", "video_processor"):
        assert processor[part]["size"] == {"height": size, "width": size}
        assert processor[part]["image_mean"] == processor[part]["image_std"] == [0.5, 0.5, 0.5]


def test_chat_template_renders_our_prompt(tmp_path) -> None:
    from transformers import AutoTokenizer

    out = write_tiny_checkpoint(tmp_path, "hf", spec=vllm_spec(), processor_files=True)
    tokenizer = AutoTokenizer.from_pretrained(str(out))
    template = (out / "chat_template.jinja").read_text()
    messages = [{"role": "user", "content": "<video>\nWhat is moving?"}]  # vLLM's string content format
    served = tokenizer.apply_chat_template(messages, chat_template=template, tokenize=False,
                                           add_generation_prompt=True)
    ours = video_prompt_ids("What is moving?", tokenizer)
    served_ids = tokenizer(served, add_special_tokens=False).input_ids
    video = tokenizer.convert_tokens_to_ids("<video>")
    assert served_ids == [video if i < 0 else i for i in ours.tolist()]  # <image> (-200) where <video> is


def test_processor_files_need_the_hf_format(tmp_path) -> None:
    with pytest.raises(ValueError, match="use format 'hf'"):
        write_tiny_checkpoint(tmp_path, "original", processor_files=True)


def test_command_line_vllm_option(tmp_path) -> None:
    main([str(tmp_path / "a"), "--vllm", "--image-size", "384", "--patch-size", "14"])
    config = json.loads((tmp_path / "a" / "config.json").read_text())
    assert config["vision_config"]["image_size"] == 384 and config["vision_config"]["patch_size"] == 14
    assert (tmp_path / "a" / "processor_config.json").exists()
    with pytest.raises(SystemExit):
        main([str(tmp_path / "b"), "--vllm", "--format", "original"])
    with pytest.raises(SystemExit):
        main([str(tmp_path / "c"), "--image-size", "384"])
