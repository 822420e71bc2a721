"""Find a checkpoint, read its config and weights, and rename the weights to our module names.

Steps are separate, so each can be tested on its own: `resolve_checkpoint` (local dir or hub id) ->
`read_config` -> `read_weights` (safetensors, single or sharded; pickled `.bin` only on explicit opt-in) ->
`to_our_names` (one declared key map per format, then the llava-hf vocabulary padding undone and tied `lm_head`
handled). The key maps are the checkpoints' own weight names (lmms-lab's `model.vision_tower.vision_tower.
vision_model.*`, `model.mm_projector.*`; llava-hf's `vision_tower.*`, `multi_modal_projector.linear_{1,2}.*`, with
or without a `model.` prefix) mapped onto ours.

Our names are those of `LlavaOnevisionVideoModel.state_dict()`:
`vision_tower.*` (transformers >= 5.6 SiglipVisionModel, no `vision_model.` level), `projector.{0,2}.*`,
`image_newline`, `language_model.model.*`, `language_model.lm_head.weight`.
"""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

from llava.model.model_config import CheckpointFormat, ModelConfig

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
SAFETENSORS_INDEX = "model.safetensors.index.json"
HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
HUB_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken"]

# Ordered (on-disk prefix, our prefix) pairs; the first matching prefix wins. One table per format.
ORIGINAL_KEY_MAP: tuple[tuple[str, str], ...] = (
    ("model.vision_tower.vision_tower.vision_model.", "vision_tower."),
    ("model.mm_projector.", "projector."),
    ("model.image_newline", "image_newline"),
    ("model.", "language_model.model."),
    ("lm_head.", "language_model.lm_head."),
)
HF_KEY_MAP: tuple[tuple[str, str], ...] = (
    # llava-hf on disk (transformers 4.45-4.51 runtime names, also what save_pretrained restores by default)
    ("vision_tower.vision_model.", "vision_tower."),
    ("vision_tower.", "vision_tower."),  # transformers >= 5.6 writes the tower without `vision_model.`
    ("multi_modal_projector.linear_1.", "projector.0."),
    ("multi_modal_projector.linear_2.", "projector.2."),
    ("image_newline", "image_newline"),
    ("language_model.model.", "language_model.model."),
    ("language_model.lm_head.", "language_model.lm_head."),
    # transformers >= 4.52 runtime names (save_pretrained(save_original_format=False))
    ("model.vision_tower.vision_model.", "vision_tower."),
    ("model.vision_tower.", "vision_tower."),
    ("model.multi_modal_projector.linear_1.", "projector.0."),
    ("model.multi_modal_projector.linear_2.", "projector.2."),
    ("model.image_newline", "image_newline"),
    ("model.language_model.", "language_model.model."),
    ("lm_head.", "language_model.lm_head."),
)
KEY_MAPS: dict[str, tuple[tuple[str, str], ...]] = {"original": ORIGINAL_KEY_MAP, "hf": HF_KEY_MAP}
SKIPPED_SUFFIXES = ("rotary_emb.inv_freq",)  # recomputed buffers some old checkpoints carry
EMBED_KEY = "language_model.model.embed_tokens.weight"
LM_HEAD_KEY = "language_model.lm_head.weight"


def resolve_checkpoint(model_path: str | Path, revision: str | None = None) -> Path:
    """A local checkpoint directory, or a hub id downloaded (or found in the cache) with huggingface_hub."""
    path = Path(model_path).expanduser()
    if path.is_dir():
        return path
    name = str(model_path)
    if path.exists() or not HUB_ID.match(name):
        raise ValueError(
            f"checkpoint {name!r} is not a directory and not a hub id (owner/name); pass the directory that holds "
            "config.json and the *.safetensors files"
        )
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, HFValidationError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(name, revision=revision, allow_patterns=HUB_PATTERNS))
    except (HfHubHTTPError, HFValidationError, LocalEntryNotFoundError, OSError) as err:
        reason = str(err).split("\n")[0][:160]
        raise ValueError(
            f"checkpoint {name!r} is not a local directory and could not be fetched from the Hugging Face hub "
            f"({type(err).__name__}: {reason}); download it where there is network (`hf download {name} "
            "--local-dir DIR`) and pass DIR instead of the hub id"
        ) from err


def read_config(checkpoint_dir: Path) -> dict[str, Any]:
    """The raw config.json content."""
    config_path = checkpoint_dir / CONFIG_FILE
    if not config_path.is_file():
        raise ValueError(f"{checkpoint_dir} has no {CONFIG_FILE}; point model_path at a LLaVA-OneVision checkpoint")
    try:
        return json.loads(config_path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{config_path} is not valid JSON ({err}); re-download the checkpoint") from err


def weight_files(checkpoint_dir: Path, allow_pickle: bool = False) -> list[Path]:
    """The weight files to read: the shards of the index, else every *.safetensors, else (opt-in) *.bin."""
    index = checkpoint_dir / SAFETENSORS_INDEX
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        missing = [s for s in shards if not (checkpoint_dir / s).is_file()]
        if missing:
            raise ValueError(f"{index} lists shards that are not on disk: {missing}; re-download the checkpoint")
        return [checkpoint_dir / s for s in shards]
    files = sorted(checkpoint_dir.glob("*.safetensors"))
    if files:
        return files
    pickled = sorted(checkpoint_dir.glob("*.bin"))
    if pickled and allow_pickle:
        return pickled
    if pickled:
        raise ValueError(
            f"{checkpoint_dir} holds only pickled weights ({pickled[0].name}); loading them can run code. Convert "
            "them to safetensors, or pass allow_pickle=True if you trust the source"
        )
    raise ValueError(f"{checkpoint_dir} has no *.safetensors weights; re-download the checkpoint")


def read_weights(files: list[Path], dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """Every tensor of every file, on CPU, cast to `dtype` when given (floating tensors only)."""
    state: dict[str, torch.Tensor] = {}
    for file in files:
        tensors = _read_bin(file) if file.suffix == ".bin" else _read_safetensors(file)
        for key, tensor in tensors.items():
            state[key] = tensor.to(dtype) if dtype is not None and tensor.is_floating_point() else tensor
    return state


def _read_safetensors(file: Path) -> dict[str, torch.Tensor]:
    try:
        with safe_open(str(file), framework="pt") as handle:
            return {key: handle.get_tensor(key) for key in handle.keys()}
    except SafetensorError as err:
        raise ValueError(f"{file} is not a readable safetensors file ({err}); it is probably truncated, "
                         "re-download it") from err


def _read_bin(file: Path) -> dict[str, torch.Tensor]:
    return torch.load(file, map_location="cpu", weights_only=True)


def rename_keys(state: dict[str, torch.Tensor], fmt: CheckpointFormat) -> tuple[dict[str, torch.Tensor], list[str]]:
    """On-disk names -> our names with the format's key map; returns (renamed, keys no rule matched)."""
    renamed: dict[str, torch.Tensor] = {}
    unmatched: list[str] = []
    for key, tensor in state.items():
        if key.endswith(SKIPPED_SUFFIXES):
            continue
        new_key = _apply_map(key, KEY_MAPS[fmt])
        if new_key is None:
            unmatched.append(key)
        else:
            renamed[new_key] = tensor
    return renamed, unmatched


def _apply_map(key: str, key_map: tuple[tuple[str, str], ...]) -> str | None:
    for old, new in key_map:
        if key.startswith(old):
            return new + key[len(old):]
    return None


def to_our_names(state: dict[str, torch.Tensor], config: ModelConfig) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Rename, slice padded vocabulary rows back to `config.text.vocab_size`, drop a tied lm_head copy."""
    renamed, unmatched = rename_keys(state, config.source_format)
    vocab = config.text.vocab_size
    for key in (EMBED_KEY, LM_HEAD_KEY):
        if key in renamed and renamed[key].shape[0] > vocab:
            renamed[key] = renamed[key][:vocab]  # undo llava-hf padding (ecosystem 3.3)
    if config.tie_word_embeddings and LM_HEAD_KEY in renamed:
        head = renamed.pop(LM_HEAD_KEY)
        embed = renamed.get(EMBED_KEY)
        if embed is not None and not torch.equal(head, embed):
            raise ValueError(
                "config says tie_word_embeddings=true but lm_head differs from embed_tokens on disk; set "
                "tie_word_embeddings=false in config.json if the head is trained separately"
            )
    return renamed, unmatched
