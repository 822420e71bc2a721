"""LLaVA-Scissor token compression as a pure-torch library: `compress(features [F, T, D], config)`.

Knows nothing about models: the model calls `compress` once between the projector and the language model.
"""
from .compressor import COMPRESSORS, compress
from .types import METHODS, CompressionConfig, CompressionResult, CompressionStats

__all__ = ["COMPRESSORS", "METHODS", "CompressionConfig", "CompressionResult", "CompressionStats", "compress"]
