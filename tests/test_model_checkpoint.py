"""Checkpoint reading: key maps, format detection, vocab padding, config policies, and the errors users hit."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from llava.compression import CompressionConfig
from llava.model.builder import build_model, context_length, load_pretrained_model, zip_requested
from llava.model.checkpoint import rename_keys, resolve_checkpoint, to_our_names
from llava.model.model_config import (
    detect_format,
    parse_bool,
    parse_model_config,
    resolve_compression,
    resolve_newline,
    unpadded_vocab_size,
)
from llava.testing.tiny_checkpoint import TinySpec, original_config, write_tiny_checkpoint

# ---- (f) key maps on a small fake state dict ----------------------------------------------------------------

ORIGINAL_FAKE = {
    "model.embed_tokens.weight": "language_model.model.embed_tokens.weight",
    "model.layers.0.self_attn.q_proj.bias": "language_model.model.layers.0.self_attn.q_proj.bias",
    "model.norm.weight": "language_model.model.norm.weight",
    "lm_head.weight": "language_model.lm_head.weight",
    "model.vision_tower.vision_tower.vision_model.encoder.layers.25.mlp.fc2.weight":
        "vision_tower.encoder.layers.25.mlp.fc2.weight",
    "model.vision_tower.vision_tower.vision_model.post_layernorm.bias": "vision_tower.post_layernorm.bias",
    "model.mm_projector.0.weight": "projector.0.weight",
    "model.mm_projector.2.bias": "projector.2.bias",
    "model.image_newline": "image_newline",
}
HF_FAKE = {
    "language_model.model.embed_tokens.weight": "language_model.model.embed_tokens.weight",
    "language_model.model.layers.3.mlp.up_proj.weight": "language_model.model.layers.3.mlp.up_proj.weight",
    "language_model.lm_head.weight": "language_model.lm_head.weight",
    "vision_tower.vision_model.embeddings.patch_embedding.weight": "vision_tower.embeddings.patch_embedding.weight",
    "vision_tower.encoder.layers.0.layer_norm1.weight": "vision_tower.encoder.layers.0.layer_norm1.weight",
    "multi_modal_projector.linear_1.weight": "projector.0.weight",
    "multi_modal_projector.linear_2.bias": "projector.2.bias",
    "image_newline": "image_newline",
    "model.language_model.norm.weight": "language_model.model.norm.weight",
    "lm_head.weight": "language_model.lm_head.weight",
}


@pytest.mark.parametrize(("fmt", "fake"), [("original", ORIGINAL_FAKE), ("hf", HF_FAKE)])
def test_key_map_renames_every_known_key(fmt: str, fake: dict[str, str]) -> None:
    state = {key: torch.full((1,), float(i)) for i, key in enumerate(fake)}
    renamed, unmatched = rename_keys(state, fmt)
    assert unmatched == []
    assert {new: float(renamed[new]) for new in renamed} == {fake[old]: float(state[old]) for old in fake}


def test_key_map_reports_unknown_keys_and_skips_inv_freq() -> None:
    state = {"model.layers.0.self_attn.rotary_emb.inv_freq": torch.ones(1), "resampler.weight": torch.ones(1)}
    renamed, unmatched = rename_keys(state, "original")
    assert renamed == {}
    assert unmatched == ["resampler.weight"]


def test_hf_vocab_padding_is_sliced_and_tied_head_dropped() -> None:
    config = parse_model_config(json.loads(json.dumps(_hf_raw(tied=True))))
    vocab, padded = config.text.vocab_size, config.padded_vocab_size
    assert (vocab, padded) == (384, 448)
    embed = torch.randn(padded, 4)
    state = {"language_model.model.embed_tokens.weight": embed, "language_model.lm_head.weight": embed.clone()}
    ours, _ = to_our_names(state, config)
    assert list(ours) == ["language_model.model.embed_tokens.weight"]
    assert torch.equal(ours["language_model.model.embed_tokens.weight"], embed[:vocab])


def test_tied_head_that_differs_from_embeddings_is_an_error() -> None:
    config = parse_model_config(_hf_raw(tied=True))
    state = {"language_model.model.embed_tokens.weight": torch.zeros(448, 4),
             "language_model.lm_head.weight": torch.ones(448, 4)}
    with pytest.raises(ValueError, match="tie_word_embeddings"):
        to_our_names(state, config)


@pytest.mark.parametrize(("padded", "original"), [(152000, 151936), (152128, 152064), (448, 384), (1000, 1000)])
def test_unpadded_vocab_size(padded: int, original: int) -> None:
    assert unpadded_vocab_size(padded) == original


# ---- config policies ----------------------------------------------------------------------------------------

def test_detect_format_by_content() -> None:
    assert detect_format(original_config(TinySpec())) == "original"
    assert detect_format(_hf_raw()) == "hf"
    with pytest.raises(ValueError, match="not a LLaVA-OneVision"):
        detect_format({"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"]})


def test_config_without_vision_keys_is_a_clear_error() -> None:
    raw = {k: v for k, v in original_config(TinySpec()).items() if not k.startswith("mm_")}
    with pytest.raises(ValueError, match=r"lacks the vision keys \['mm_vision_tower'"):
        parse_model_config(raw)


def test_real_checkpoint_without_vision_config_gets_so400m() -> None:
    raw = {k: v for k, v in original_config(TinySpec()).items() if k != "vision_config"}
    raw["mm_hidden_size"] = 1152
    vision = parse_model_config(raw).vision
    assert (vision.hidden_size, vision.num_hidden_layers, vision.image_size, vision.patch_size) == (1152, 26, 384, 14)


@pytest.mark.parametrize(("value", "expected"), [(True, True), (False, False), ("false", False), ("True", True),
                                                 (None, False)])
def test_mm_use_zip_strings_are_honest(value: object, expected: bool) -> None:
    assert parse_bool("mm_use_zip", value) is expected


def test_mm_use_zip_garbage_is_an_error() -> None:
    with pytest.raises(ValueError, match="mm_use_zip"):
        parse_bool("mm_use_zip", "yes please")


def test_compression_resolution_order() -> None:
    base = parse_model_config(original_config(TinySpec(use_zip="false", zip_tau=0.8, zip_epsilon=0.05)))
    assert resolve_compression(base, None).method == "none"  # the string "false" means off
    by_name = resolve_compression(base, None, zip_requested("llava_qwen_zip"))
    assert (by_name.method, by_name.tau, by_name.epsilon) == ("scc", 0.8, 0.05)
    run = CompressionConfig(method="uniform", retention_ratio=0.5)
    assert resolve_compression(base, run, True) is run  # the run's config wins
    on = parse_model_config(original_config(TinySpec(use_zip=True)))
    assert resolve_compression(on, None).tau == 0.95  # documented fallback: LLaVA-Scissor's code default


def test_newline_policy() -> None:
    config = parse_model_config(original_config(TinySpec()))
    assert resolve_newline("auto", config, compressing=False) == "one_token"
    assert resolve_newline("auto", config, compressing=True) == "none"
    assert resolve_newline("one_token", config, compressing=True) == "one_token"
    flat = parse_model_config({**original_config(TinySpec()), "mm_patch_merge_type": "flat"})
    assert not flat.has_image_newline and resolve_newline("auto", flat, False) == "none"
    with pytest.raises(ValueError, match="image_newline"):
        resolve_newline("one_token", flat, compressing=False)


def test_context_length_follows_llava_next_order() -> None:
    config = parse_model_config(original_config(TinySpec()))
    assert context_length(config) == 4096  # max_position_embeddings
    config.max_sequence_length = 1234
    assert context_length(config) == 1234


# ---- (e) errors on disk -------------------------------------------------------------------------------------

def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a directory"):
        resolve_checkpoint(tmp_path / "nope" / "deeper")


def test_offline_hub_id_names_the_checkpoint(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ValueError, match=r"nobody/no-such-model.*--local-dir"):
        resolve_checkpoint("nobody/no-such-model")


def test_truncated_safetensors_names_the_file(tiny_original_dir: Path, tmp_path: Path) -> None:
    broken = _copy(tiny_original_dir, tmp_path)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:5000])
    with pytest.raises(ValueError, match=r"model\.safetensors.*truncated"):
        build_model(broken, torch.float32)


def test_missing_and_unexpected_weights_are_listed(tiny_original_dir: Path, tmp_path: Path) -> None:
    broken = _copy(tiny_original_dir, tmp_path)
    from safetensors.torch import load_file

    state = load_file(str(broken / "model.safetensors"))
    state.pop("model.mm_projector.2.bias")
    state["model.extra_head.weight"] = torch.zeros(2)
    save_file(state, str(broken / "model.safetensors"))
    with pytest.raises(ValueError, match=r"missing \['projector.2.bias'\].*'language_model.model.extra_head.weight'"):
        build_model(broken, torch.float32)


def test_pickled_weights_need_opt_in(tiny_original_dir: Path, tmp_path: Path) -> None:
    pickled = _copy(tiny_original_dir, tmp_path)
    from safetensors.torch import load_file

    torch.save(load_file(str(pickled / "model.safetensors")), pickled / "pytorch_model.bin")
    (pickled / "model.safetensors").unlink()
    with pytest.raises(ValueError, match="allow_pickle=True"):
        build_model(pickled, torch.float32)
    assert build_model(pickled, torch.float32, allow_pickle=True).projector[0].weight.shape == (64, 32)


def test_unsupported_builder_arguments(tiny_original_dir: Path) -> None:
    with pytest.raises(ValueError, match="model_base"):
        load_pretrained_model(str(tiny_original_dir), model_base="base")
    with pytest.raises(TypeError, match="unexpected arguments"):
        load_pretrained_model(str(tiny_original_dir), wrong_flag=1)


def test_sharded_checkpoint_loads_the_same_weights(tiny_original_dir: Path, tmp_path: Path) -> None:
    sharded = write_tiny_checkpoint(tmp_path / "sharded", "original", seed=0, shards=3)
    assert len(list(sharded.glob("*.safetensors"))) == 3
    a, b = build_model(tiny_original_dir, torch.float32), build_model(sharded, torch.float32)
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(x, y), name


def _hf_raw(tied: bool = False) -> dict:
    from llava.testing.tiny_checkpoint import hf_config

    return hf_config(TinySpec(tie_word_embeddings=tied))


def _copy(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(src, dst)
    return dst


def test_auto_dtype_follows_the_hardware(monkeypatch: pytest.MonkeyPatch) -> None:
    """"auto": bf16 on CUDA or a CPU with native bf16 matmuls, fp32 on other CPUs; explicit names win."""
    from llava.model import builder

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for avx512_bf16, amx, expected in ((False, False, torch.float32), (True, False, torch.bfloat16),
                                       (False, True, torch.bfloat16)):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda v=avx512_bf16: v)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda v=amx: v)
        assert builder.resolve_dtype("auto") == expected
        assert builder.resolve_dtype("float32") == torch.float32
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert builder.resolve_dtype(None) == torch.bfloat16
