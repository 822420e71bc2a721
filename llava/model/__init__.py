"""LLaVA-OneVision video model on transformers parts, checkpoint loading for both formats, SigLIP preprocessing."""
from llava.model.builder import load_pretrained_model
from llava.model.image_processor import SiglipVideoProcessor
from llava.model.model_config import ModelConfig, parse_model_config
from llava.model.modeling import LlavaOnevisionVideoModel

__all__ = [
    "LlavaOnevisionVideoModel",
    "ModelConfig",
    "SiglipVideoProcessor",
    "load_pretrained_model",
    "parse_model_config",
]
