"""LLaVA-Scissor's README quick start (their inference.py flow), unchanged but for the device, on a tiny
checkpoint that carries the Scissor config keys: the drop-in names must behave as there."""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np

from llava.testing.tiny_checkpoint import TinySpec, write_tiny_checkpoint


def test_authors_quick_start_runs_with_their_compression(tmp_path: Path) -> None:
    checkpoint = write_tiny_checkpoint(tmp_path / "scissor", "original", seed=0,
                                       spec=TinySpec(use_zip="True", zip_tau=0.9, zip_epsilon=0.05))
    # ---- as in the authors' inference.py (device_map "cpu" instead of "auto"; fp32 pixels on CPU) ----
    from llava.constants import DEFAULT_IMAGE_TOKEN, IMAGE_TOKEN_INDEX
    from llava.conversation import conv_templates
    from llava.mm_utils import tokenizer_image_token
    from llava.model.builder import load_pretrained_model

    tokenizer, model, image_processor, max_length = load_pretrained_model(
        str(checkpoint), None, "llava_qwen_zip", device_map="cpu", attn_implementation="sdpa"
    )
    model.eval()
    frames = np.random.default_rng(0).integers(0, 256, (16, 60, 80, 3), dtype=np.uint8)  # 16 frames, as they use
    video = [image_processor.preprocess(frames, return_tensors="pt")["pixel_values"]]
    conv = copy.deepcopy(conv_templates["qwen_2"])
    conv.append_message(conv.roles[0], DEFAULT_IMAGE_TOKEN + "\nPlease describe this video in detail.")
    conv.append_message(conv.roles[1], None)
    input_ids = tokenizer_image_token(conv.get_prompt(), tokenizer, IMAGE_TOKEN_INDEX, return_tensors="pt").unsqueeze(0)
    cont = model.generate(input_ids, images=video, modalities=["video"], do_sample=False, temperature=0,
                          max_new_tokens=8)
    text_outputs = tokenizer.batch_decode(cont, skip_special_tokens=True)[0].strip()
    # ---- what our package adds: the checkpoint's mm_zip_* keys were honoured ----
    assert isinstance(text_outputs, str) and max_length == model.config.text.max_position_embeddings
    compression = model.default_compression
    assert compression.method == "scc" and compression.tau == 0.9 and compression.epsilon == 0.05
    stats = model.encode_video(video[0]).stats
    assert stats.tokens_in == 16 * 16 and stats.tokens_out < stats.tokens_in
