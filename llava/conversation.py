"""Chat templates with LLaVA-NeXT's names and exact strings (`conv_templates["qwen_2"]` etc.).

Only the ChatML style is needed by the Qwen-based OneVision / LLaVA-Scissor checkpoints, so only it builds prompts;
`SeparatorStyle` still has all of LLaVA-NeXT's members and templates carry `sep2`, because lmms-eval's
`llava_onevision` class reads `conv.sep_style != SeparatorStyle.TWO` and `conv.sep2` to choose its stop string.
The prompt must match the one the checkpoints were trained and evaluated with character for character, so
`get_prompt` is tested verbatim.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from enum import Enum, auto
from typing import TYPE_CHECKING

import torch

from llava.constants import DEFAULT_IMAGE_TOKEN
from llava.mm_utils import tokenizer_image_token

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


class SeparatorStyle(Enum):
    """LLaVA-NeXT's separator styles (same member names); `Conversation.get_prompt` implements CHATML only."""

    SINGLE = auto()
    TWO = auto()
    MPT = auto()
    PLAIN = auto()
    CHATML = auto()
    LLAMA_2 = auto()
    LLAMA_3 = auto()
    QWEN = auto()
    GEMMA = auto()


class TemplateRegistry(dict):
    """`conv_templates`: an unknown name raises a KeyError listing the templates there are."""

    def __missing__(self, name: str) -> Conversation:
        raise KeyError(f"conversation template {name!r} is not defined here; available: {sorted(self)} (the "
                       "Qwen-based LLaVA-OneVision checkpoints use 'qwen_2' / 'qwen_1_5')")


@dataclass
class Conversation:
    """A system prompt plus alternating (role, message) turns; `None` as message opens a turn for generation."""

    system: str
    roles: tuple[str, str]
    messages: list[list[str | None]] = field(default_factory=list)
    sep_style: SeparatorStyle = SeparatorStyle.CHATML
    sep: str = "<|im_end|>"
    sep2: str | None = None  # second separator of the TWO style; None for ChatML, as in LLaVA-NeXT's Qwen templates
    version: str = "qwen"

    def append_message(self, role: str, message: str | None) -> None:
        self.messages.append([role, message])

    def get_prompt(self) -> str:
        """ChatML: `system<sep>\\n`, then `role\\nmessage<sep>\\n` per turn, `role\\n` for an open turn."""
        if self.sep_style is not SeparatorStyle.CHATML:
            raise ValueError(f"only SeparatorStyle.CHATML prompts are implemented (the Qwen templates), got "
                             f"{self.sep_style}; use conv_templates['qwen_2']")
        parts = [self.system + self.sep + "\n"]
        for role, message in self.messages:
            parts.append(role + "\n" if message is None else role + "\n" + message + self.sep + "\n")
        return "".join(parts)

    def copy(self) -> Conversation:
        return copy.deepcopy(self)


conv_qwen = Conversation(
    system="<|im_start|>system\nYou are a helpful assistant.",
    roles=("<|im_start|>user", "<|im_start|>assistant"),
)
conv_qwen_2_5 = Conversation(
    system="<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.",
    roles=("<|im_start|>user", "<|im_start|>assistant"),
)

default_conversation = conv_qwen
conv_templates: dict[str, Conversation] = TemplateRegistry(
    qwen=conv_qwen,
    qwen_1_5=conv_qwen,
    qwen_2=conv_qwen,
    qwen_2_5=conv_qwen_2_5,
)


def video_prompt_ids(question: str, tokenizer: PreTrainedTokenizerBase, template: str = "qwen_2") -> torch.Tensor:
    """The chat prompt for one video and a question -> ids [L] with IMAGE_TOKEN_INDEX where the video goes.

    `<image>\n` before the question, as LLaVA-NeXT's demos and lmms-eval's OneVision model build it; a question
    that already holds `<image>` keeps it where it is (lmms-eval's stock class does the same, and some tasks
    place the video themselves). The CLI and the lmms-eval model both build their prompts here.
    """
    text = question if DEFAULT_IMAGE_TOKEN in question else f"{DEFAULT_IMAGE_TOKEN}\n{question}"
    conv = conv_templates[template].copy()
    conv.append_message(conv.roles[0], text)
    conv.append_message(conv.roles[1], None)
    return tokenizer_image_token(conv.get_prompt(), tokenizer, return_tensors="pt")
