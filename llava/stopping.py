"""LLaVA-NeXT's `KeywordsStoppingCriteria`, built on transformers' `StopStringCriteria`.

lmms-eval's `llava_onevision` class passes one per video request (`[conv.sep]`, i.e. `<|im_end|>` for Qwen) to
`model.generate(..., stopping_criteria=[...])`. transformers' criterion matches the keyword in token space on the
device (no decode, no host round trip per step) and returns one flag per batch row, so a finished row stops while
the others go on. It lives outside `llava.mm_utils` because importing transformers' generation code costs over a
second, and `llava.mm_utils` is imported by scripts that only tokenize.
"""
from __future__ import annotations

from typing import Any

import torch
from transformers import StopStringCriteria


class KeywordsStoppingCriteria(StopStringCriteria):
    """Stop a row once its generated text ends with one of `keywords` (any tokenization of them).

    `input_ids` (the prompt) is accepted for LLaVA-NeXT's signature. It is not needed: a keyword matches only when
    it overlaps the newest token, so text already in the prompt never stops generation, whether `generate` returns
    the prompt with the new tokens or (as when generating from embeddings) the new tokens only.
    """

    def __init__(self, keywords: list[str], tokenizer: Any, input_ids: torch.Tensor | None = None) -> None:
        keywords = [keywords] if isinstance(keywords, str) else list(keywords)
        if not keywords or not all(isinstance(k, str) and k for k in keywords):
            raise ValueError(f"keywords must be a non-empty list of non-empty strings, got {keywords!r}")
        super().__init__(tokenizer, keywords)
        self.keywords = keywords
