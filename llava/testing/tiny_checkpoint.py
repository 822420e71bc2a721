"""Tiny random LLaVA-OneVision checkpoints in both on-disk formats, for tests without downloads or GPUs.

`write_tiny_checkpoint(out_dir, fmt="original" | "hf", seed=0)` writes config.json, safetensors weights and a
tokenizer built locally. The config keys and weight names are those of the real checkpoints (reference/ecosystem.md
1.1-1.2 for lmms-lab's LLaVA-NeXT format, 3.2-3.3 for llava-hf, including its padded vocabulary); only the sizes
are tiny. The same seed gives the same weights in both formats, so tests can require identical logits.

Original-format configs get a `vision_config` dict (our extension, see llava/model/model_config.py): real checkpoints
use the fixed so400m tower, tiny ones must declare theirs.

vLLM-ready checkpoints (`write_tiny_checkpoint(out, "hf", spec=vllm_spec(), processor_files=True)`, or `--vllm`
on the command line): vLLM's CPU attention rejects head_dim 16 (it needs 32 or more), builds the processor from
processor_config.json, and gives NaN past `max_position_embeddings` (a 32-frame prompt at the real 384 px geometry
is about 6.3k tokens). `vllm_spec` fixes the first and the last, `processor_files` writes the second plus a ChatML
chat template for the OpenAI server.

Command line: `python -m llava.testing.tiny_checkpoint OUT_DIR --format original|hf [--seed N] [--tied]
[--vllm [--image-size 384 --patch-size 14]]`.
"""
from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from llava.constants import TINY_MARKER
from llava.model.checkpoint import HF_KEY_MAP, ORIGINAL_KEY_MAP, SAFETENSORS_INDEX
from llava.model.model_config import HF_ADDED_TOKENS, HF_PAD_MULTIPLE, parse_model_config

logger = logging.getLogger(__name__)

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
HF_EXTRA_TOKENS = ("<image>", "<video>")
IMAGE_MEAN_STD = [0.5, 0.5, 0.5]  # SigLIP's, as in llava-hf's processor configs
BICUBIC = 3  # PIL's code, the resample of llava-hf's processor configs

# ChatML as `llava.conversation.conv_templates["qwen_2"]` renders it, over plain-string message content: vLLM then
# puts "<video>\n" before the user's text, so a server prompt equals `video_prompt_ids` with <video> for <image>.
CHAT_TEMPLATE = """{%- for message in messages -%}
{%- if loop.first and message['role'] != 'system' -%}
<|im_start|>system
You are a helpful assistant.<|im_end|>
{% endif -%}
<|im_start|>{{ message['role'] }}
{{ message['content'] }}<|im_end|>
{% endfor -%}
{%- if add_generation_prompt -%}
<|im_start|>assistant
{% endif -%}
"""
N_BYTES = 256  # byte-level base vocabulary: one token per byte, no merges


@dataclass(frozen=True)
class TinySpec:
    """Sizes of a tiny checkpoint (the real 0.5B: hidden 896, 24 layers; tower 1152 wide, 26 layers, 384 px)."""

    vocab_size: int = 384  # a multiple of 128 like Qwen's, larger than the 259-token tokenizer like Qwen's
    hidden_size: int = 64
    intermediate_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    vision_hidden_size: int = 32
    vision_intermediate_size: int = 64
    vision_layers: int = 2
    vision_heads: int = 4
    image_size: int = 56  # patch 8 -> 7x7 = 49 patches -> bilinear 4x4 = 16 tokens per frame
    patch_size: int = 8
    tie_word_embeddings: bool = False
    max_position_embeddings: int = 4096
    use_zip: bool | str | None = None  # LLaVA-Scissor keys, written only when set
    zip_tau: float | None = None
    zip_epsilon: float | None = None


def vllm_spec(image_size: int = 56, patch_size: int = 8) -> TinySpec:
    """Sizes vLLM's CPU backend runs: head_dim 32 (hidden 64 / 2 heads) and 32k positions (the real 0.5B's)."""
    return TinySpec(num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32768,
                    image_size=image_size, patch_size=patch_size)


def original_config(spec: TinySpec) -> dict[str, Any]:
    """config.json of an lmms-lab LLaVA-NeXT checkpoint (llava_qwen), tiny sizes."""
    pinpoints = [[h, w] for h in range(384, 2305, 384) for w in range(384, 2305, 384)]
    config: dict[str, Any] = {
        "architectures": ["LlavaQwenForCausalLM"], "model_type": "llava",
        "vocab_size": spec.vocab_size, "hidden_size": spec.hidden_size, "intermediate_size": spec.intermediate_size,
        "num_hidden_layers": spec.num_hidden_layers, "num_attention_heads": spec.num_attention_heads,
        "num_key_value_heads": spec.num_key_value_heads, "hidden_act": "silu",
        "max_position_embeddings": spec.max_position_embeddings,
        "max_window_layers": spec.num_hidden_layers, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
        "sliding_window": 4096, "use_sliding_window": False, "attention_dropout": 0.0, "initializer_range": 0.02,
        "tie_word_embeddings": spec.tie_word_embeddings, "bos_token_id": N_BYTES, "eos_token_id": N_BYTES + 2,
        "use_cache": True, "torch_dtype": "float32",
        "mm_vision_tower": "google/siglip-so400m-patch14-384", "mm_projector_type": "mlp2x_gelu",
        "mm_hidden_size": spec.vision_hidden_size, "mm_vision_select_layer": -2, "mm_vision_select_feature": "patch",
        "mm_spatial_pool_mode": "bilinear", "mm_newline_position": "one_token",
        "mm_patch_merge_type": "spatial_unpad", "image_aspect_ratio": "anyres_max_9",
        "image_grid_pinpoints": pinpoints, "image_token_index": N_BYTES + len(SPECIAL_TOKENS),
        "mm_tunable_parts": "mm_vision_tower,mm_mlp_adapter,mm_language_model",
        "mm_use_im_start_end": False, "mm_use_im_patch_token": False,
        "tokenizer_model_max_length": 32768, "tokenizer_padding_side": "right",
        "vision_config": vision_config(spec),
        TINY_MARKER: True,
    }
    for key, value in (("mm_use_zip", spec.use_zip), ("mm_zip_tau", spec.zip_tau),
                       ("mm_zip_epsilon", spec.zip_epsilon)):
        if value is not None:
            config[key] = value
    return config


def vision_config(spec: TinySpec) -> dict[str, Any]:
    return {
        "hidden_size": spec.vision_hidden_size, "intermediate_size": spec.vision_intermediate_size,
        "num_hidden_layers": spec.vision_layers, "num_attention_heads": spec.vision_heads,
        "image_size": spec.image_size, "patch_size": spec.patch_size,
    }


def hf_padded_vocab(vocab_size: int) -> int:
    """llava-hf's resize_token_embeddings(vocab + 2, pad_to_multiple_of=64)."""
    return -(-(vocab_size + HF_ADDED_TOKENS) // HF_PAD_MULTIPLE) * HF_PAD_MULTIPLE


def hf_config(spec: TinySpec) -> dict[str, Any]:
    """config.json as transformers' LlavaOnevisionConfig writes it, vocabulary padded like llava-hf's."""
    from transformers import LlavaOnevisionConfig, Qwen2Config, SiglipVisionConfig

    text = {k: v for k, v in original_config(spec).items() if not k.startswith(("mm_", "image_"))}
    for key in ("architectures", "model_type", "vision_config", TINY_MARKER, "tokenizer_model_max_length",
                "tokenizer_padding_side", "torch_dtype", "use_cache"):
        text.pop(key)
    text["vocab_size"] = hf_padded_vocab(spec.vocab_size)
    config = LlavaOnevisionConfig(
        text_config=Qwen2Config(**text).to_dict(),
        vision_config=SiglipVisionConfig(**vision_config(spec), vision_use_head=False).to_dict(),
        image_token_index=N_BYTES + len(SPECIAL_TOKENS),
        video_token_index=N_BYTES + len(SPECIAL_TOKENS) + 1,
        vision_feature_layer=-1,
        vision_feature_select_strategy="full",
        tie_word_embeddings=spec.tie_word_embeddings,
    )
    config.architectures = ["LlavaOnevisionForConditionalGeneration"]
    return {**config.to_dict(), TINY_MARKER: True}


def random_state(spec: TinySpec, seed: int) -> dict[str, torch.Tensor]:
    """Seeded random weights under our module names (what `LlavaOnevisionVideoModel.state_dict()` holds)."""
    from llava.model.modeling import LlavaOnevisionVideoModel

    torch.manual_seed(seed)
    model = LlavaOnevisionVideoModel(parse_model_config(original_config(spec)), attn_implementation="eager")
    with torch.no_grad():  # unit-scale weights: outputs must depend on the video and the prompt, not just the
        for name, param in model.named_parameters():  # last token (transformers' 0.02 init barely mixes)
            if param.dim() == 2 and "position_embedding" not in name:
                param.normal_(std=param.shape[1] ** -0.5)
        model.image_newline.normal_()
        model.language_model.get_input_embeddings().weight.normal_(std=1.0)
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    if spec.tie_word_embeddings:
        state.pop("language_model.lm_head.weight")
    return state


def invert_key_map(key_map: tuple[tuple[str, str], ...]) -> dict[str, str]:
    """our prefix -> the first on-disk prefix the loader maps to it (the canonical on-disk name)."""
    return {ours: disk for disk, ours in reversed(key_map)}


def to_disk_names(state: dict[str, torch.Tensor], fmt: str) -> dict[str, torch.Tensor]:
    """Our names -> the format's on-disk names; hf also gets llava-hf's padded vocabulary rows."""
    inverse = invert_key_map(ORIGINAL_KEY_MAP if fmt == "original" else HF_KEY_MAP)
    disk = {}
    for key, tensor in state.items():
        prefix = next(p for p in inverse if key.startswith(p))
        disk[inverse[prefix] + key[len(prefix):]] = tensor
    if fmt == "hf":
        for key in ("language_model.model.embed_tokens.weight", "language_model.lm_head.weight"):
            if key in disk:
                rows = disk[key]
                extra = rows.mean(0, keepdim=True).expand(hf_padded_vocab(rows.shape[0]) - rows.shape[0], -1)
                disk[key] = torch.cat([rows, extra]).contiguous()  # (padded vocab, D)
    return disk


def save_weights(state: dict[str, torch.Tensor], out_dir: Path, shards: int = 1) -> None:
    """model.safetensors, or `shards` files plus model.safetensors.index.json."""
    if shards == 1:
        save_file(state, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
        return
    keys = sorted(state)
    weight_map = {}
    for i in range(shards):
        name = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = {k: state[k] for k in keys[i::shards]}
        save_file(part, str(out_dir / name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(part, name))
    index = {"metadata": {"total_size": sum(t.numel() * t.element_size() for t in state.values())},
             "weight_map": weight_map}
    (out_dir / SAFETENSORS_INDEX).write_text(json.dumps(index, indent=2))


def build_tokenizer(fmt: str) -> Any:
    """A byte-level BPE (one token per byte, no merges) with the Qwen chat specials (+ <image>/<video> for hf)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet(), key=lambda ch: ord(ch))
    backend = Tokenizer(models.BPE(vocab={ch: i for i, ch in enumerate(alphabet)}, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    specials = list(SPECIAL_TOKENS) + (list(HF_EXTRA_TOKENS) if fmt == "hf" else [])
    backend.add_special_tokens(specials)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>", model_max_length=32768
    )


def processor_config(spec: TinySpec) -> dict[str, Any]:
    """processor_config.json of a `LlavaOnevisionProcessor` (transformers' layout, llava-hf's values): frames are
    resized straight to the tower's size, bicubic, mean = std = 0.5, as `llava.model`'s SiglipVideoProcessor."""
    size = {"height": spec.image_size, "width": spec.image_size}
    common = {"do_convert_rgb": True, "do_resize": True, "size": size, "resample": BICUBIC, "do_rescale": True,
              "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": IMAGE_MEAN_STD,
              "image_std": IMAGE_MEAN_STD}
    return {
        "processor_class": "LlavaOnevisionProcessor",
        "image_processor": {**common, "image_processor_type": "LlavaOnevisionImageProcessor", "do_pad": True,
                            "image_grid_pinpoints": original_config(spec)["image_grid_pinpoints"]},
        "video_processor": {**common, "video_processor_type": "LlavaOnevisionVideoProcessor",
                            "do_sample_frames": False},
        "image_token": HF_EXTRA_TOKENS[0], "video_token": HF_EXTRA_TOKENS[1],
        "num_image_tokens": (spec.image_size // spec.patch_size) ** 2,
        "vision_feature_select_strategy": "full", "vision_aspect_ratio": "anyres_max_9",
    }


def write_processor_files(out_dir: Path, spec: TinySpec) -> None:
    """processor_config.json and chat_template.jinja: what vLLM and the OpenAI server load besides the weights."""
    (out_dir / "processor_config.json").write_text(json.dumps(processor_config(spec), indent=2))
    (out_dir / "chat_template.jinja").write_text(CHAT_TEMPLATE)


def write_tiny_checkpoint(
    out_dir: str | Path,
    fmt: str = "original",
    seed: int = 0,
    spec: TinySpec | None = None,
    shards: int = 1,
    processor_files: bool = False,
) -> Path:
    """Write a tiny checkpoint of format `fmt` ("original" or "hf") into `out_dir`; returns the directory.

    processor_files (hf only): also write the processor config and chat template vLLM needs (see `vllm_spec`).
    """
    if fmt not in ("original", "hf"):
        raise ValueError(f"format must be 'original' or 'hf', got {fmt!r}")
    if processor_files and fmt != "hf":
        raise ValueError("processor files are llava-hf's: use format 'hf' with processor_files=True")
    spec = spec or TinySpec()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = original_config(spec) if fmt == "original" else hf_config(spec)
    (out / "config.json").write_text(json.dumps(config, indent=2))
    save_weights(to_disk_names(random_state(spec, seed), fmt), out, shards)
    build_tokenizer(fmt).save_pretrained(str(out))
    if processor_files:
        write_processor_files(out, spec)
    logger.info("wrote a tiny %s checkpoint to %s", fmt, out)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write a tiny random LLaVA-OneVision checkpoint for tests.")
    parser.add_argument("out_dir")
    parser.add_argument("--format", choices=("original", "hf"), help="default: original (hf with --vllm)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tied", action="store_true", help="tie lm_head to the embeddings (like the 0.5B)")
    parser.add_argument("--shards", type=int, default=1)
    parser.add_argument("--vllm", action="store_true",
                        help="a checkpoint vLLM serves on CPU: hf format, head_dim 32, 32k positions, processor files")
    parser.add_argument("--image-size", type=int, help="with --vllm: frame size (default 56; 384 = real geometry)")
    parser.add_argument("--patch-size", type=int, help="with --vllm: patch size (default 8; 14 = real geometry)")
    args = parser.parse_args(argv)
    if not args.vllm:
        if args.image_size or args.patch_size:
            parser.error("--image-size / --patch-size need --vllm")
        spec = TinySpec(tie_word_embeddings=args.tied)
        write_tiny_checkpoint(args.out_dir, args.format or "original", args.seed, spec, args.shards)
        return
    if args.format == "original":
        parser.error("--vllm writes the hf format (vLLM reads llava-hf checkpoints)")
    geometry = {k: v for k, v in (("image_size", args.image_size), ("patch_size", args.patch_size)) if v}
    spec = replace(vllm_spec(**geometry), tie_word_embeddings=args.tied)
    write_tiny_checkpoint(args.out_dir, "hf", args.seed, spec, args.shards, processor_files=True)


if __name__ == "__main__":
    main()
