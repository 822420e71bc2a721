"""lmms-eval entry point (group `lmms_eval.models`): registers `llava_scissor` without importing the model.

lmms-eval imports every entry point when it builds its model registry, so this module imports nothing heavy;
the class path is resolved only when `--model llava_scissor` is asked for.
"""
from __future__ import annotations

from typing import Any

MODEL_ID = "llava_scissor"
CLASS_PATH = "llava.eval.lmms_model.LlavaScissor"


def manifest() -> Any:
    """The `ModelManifest` lmms-eval 0.7's registry loads (a zero-argument callable is an accepted payload)."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id=MODEL_ID, simple_class_path=CLASS_PATH)
