"""DyCoke's decode stage equals a brute-force reference written from its definition.

The reference keeps no cache: at every decode step it runs the tiny LLM with eager attention over the whole
sequence (prompt and every token generated so far), reads layer L-1's attention of the last row (mean over heads)
over the video span, decides this step's kept video tokens from it (cosine similarity with the previous step's
vector below 0.9, or the first step: the int(N * (1 - P)) most attended, ties to the lower index; else all), and
runs layers L and up with an explicit mask that hides, from the row of each generated token, the video keys its
own step dropped. The prompt's rows see everything (prefill is not pruned).
"""
from __future__ import annotations

import math

import pytest
import torch
from transformers import LogitsProcessor, LogitsProcessorList
from transformers.masking_utils import create_causal_mask

from llava.compression import CompressionConfig
from llava.mm_utils import tokenizer_image_token
from llava.model.builder import load_pretrained_model
from llava.testing.tiny_checkpoint import TinySpec, write_tiny_checkpoint

N_LAYERS = 4
STEPS = 6


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    """The same tiny 4-layer fp32 checkpoint with eager attention (the reference's) and with sdpa."""
    out = write_tiny_checkpoint(tmp_path_factory.mktemp("dycoke"), "hf", seed=5,
                                spec=TinySpec(num_hidden_layers=N_LAYERS))
    return {name: load_pretrained_model(str(out), device_map="cpu", attn_implementation=name, torch_dtype="float32")
            for name in ("eager", "sdpa")}


@pytest.fixture
def inputs(bundles, frames_factory, prompt_factory):
    tokenizer, _, processor, _ = bundles["eager"]
    questions = ["What happens in this video clip, step by step?", "Why?", "Who is there?"]
    ids = [tokenizer_image_token(prompt_factory(q), tokenizer, return_tensors="pt") for q in questions]
    pixels = [processor.preprocess(frames_factory(n, seed=n))["pixel_values"] for n in (4, 2, 6)]
    return ids, pixels


class Recorder(LogitsProcessor):
    """Keeps the raw logits of every generated position."""

    def __init__(self) -> None:
        self.logits: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        self.logits.append(scores.clone())
        return scores


def _select(scores: torch.Tensor, span: list[int], previous: list[float] | None, p: float) -> tuple[set, list]:
    """This step's dropped video positions and its attention vector over the span, from the definition."""
    vector = [float(scores[i]) for i in span]
    if previous is not None:
        dot = sum(a * b for a, b in zip(vector, previous, strict=True))
        norm = math.sqrt(sum(a * a for a in vector)) * math.sqrt(sum(b * b for b in previous))
        if dot / norm >= 0.9:
            return set(), vector
    kept = set(sorted(span, key=lambda i: (-float(scores[i]), i))[:int(len(span) * (1 - p))])
    return set(span) - kept, vector


def _upper_mask(lm, hidden: torch.Tensor, prompt_length: int, drops: list[set]) -> torch.Tensor:
    """Causal eager mask [1, 1, S, S]; the row of generated token s (prompt_length + s) also hides drops[s]."""
    ones = torch.ones(hidden.shape[:2], dtype=torch.long)
    mask = create_causal_mask(config=lm.model.config, inputs_embeds=hidden, attention_mask=ones, cache=None).clone()
    for step, dropped in enumerate(drops):
        for column in dropped:
            mask[0, 0, prompt_length + step, column] = torch.finfo(mask.dtype).min
    return mask


def _reference(model, ids, pixels, config: CompressionConfig) -> tuple[list[int], list[torch.Tensor], list[int]]:
    """Greedy tokens, the logits of every generated position and the video tokens attended by layers >= L."""
    lm, layer = model.language_model, config.dycoke_l
    packed = model.prepare_inputs(ids, [pixels], ["video"], compression=config)
    embeds, prompt_length = packed.inputs_embeds, packed.inputs_embeds.shape[1]
    span = [i for i in range(prompt_length) if packed.video_mask[0, i]]
    drops: list[set] = [set()]  # the row of the last prompt token sees everything (prefill)
    previous, tokens, logits, attended = None, [], [], []
    for step in range(STEPS):
        out = lm(inputs_embeds=embeds, output_attentions=True, output_hidden_states=True)
        if step > 0:
            dropped, previous = _select(out.attentions[layer - 1][0, :, -1].mean(dim=0), span, previous,
                                        config.dycoke_p)
            drops.append(dropped)
            attended.append(len(span) - len(dropped))
        hidden = out.hidden_states[layer]  # (1, S, D): layer L's input, unaffected by the pruning
        positions = torch.arange(hidden.shape[1])[None]
        mask, rope = _upper_mask(lm, hidden, prompt_length - 1, drops), lm.model.rotary_emb(hidden, positions)
        for block in lm.model.layers[layer:]:
            hidden = block(hidden, attention_mask=mask, position_ids=positions, position_embeddings=rope)
        logits.append(lm.lm_head(lm.model.norm(hidden))[0, -1])
        tokens.append(int(logits[-1].argmax()))
        embeds = torch.cat([embeds, lm.get_input_embeddings()(torch.tensor([[tokens[-1]]]))], dim=1)
    return tokens, logits, attended


def _generate(model, ids, pixels, config: CompressionConfig) -> tuple[torch.Tensor, list[torch.Tensor]]:
    recorder = Recorder()
    out = model.generate(ids, images=pixels, modalities=["video"] * len(pixels), compression=config,
                         do_sample=False, max_new_tokens=STEPS, eos_token_id=None,
                         logits_processor=LogitsProcessorList([recorder]))
    return out, recorder.logits


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
@pytest.mark.parametrize(("layer", "p", "sample"), [(1, 0.5, 0), (2, 0.8, 1), (3, 0.7, 2), (2, 1.0, 0)])
def test_tokens_and_logits_equal_the_brute_force_reference(bundles, inputs, attention, layer, p, sample) -> None:
    ids, pixels = inputs[0][sample], inputs[1][sample]
    config = CompressionConfig(method="dycoke", dycoke_k=0.5, dycoke_l=layer, dycoke_p=p)
    with torch.no_grad():
        tokens, logits, attended = _reference(bundles["eager"][1], ids, pixels, config)
    model = bundles[attention][1]
    out, ours = _generate(model, ids, [pixels], config)
    assert out[0].tolist() == tokens
    for mine, theirs in zip(ours, logits, strict=True):
        torch.testing.assert_close(mine[0], theirs, rtol=1e-5, atol=1e-5)
    assert float(model.decode_video_tokens[0]) == pytest.approx(sum(attended) / len(attended))


def test_both_branches_occur_in_the_reference(bundles, inputs) -> None:
    """The cases above exercise a pruned step (the first) and, at least once, a step similar enough to keep all."""
    config = CompressionConfig(method="dycoke", dycoke_k=0.5, dycoke_l=2, dycoke_p=0.8)
    with torch.no_grad():
        _, _, attended = _reference(bundles["eager"][1], inputs[0][1], inputs[1][1], config)
    n_video = max(attended)
    assert attended[0] < n_video and n_video in attended


def test_each_sample_starts_fresh(bundles, inputs) -> None:
    """The previous step's vector is reset per generate call: a sample after another gives what it gives alone."""
    model = bundles["sdpa"][1]
    config = CompressionConfig(method="dycoke", dycoke_k=0.5, dycoke_p=0.7)
    alone, alone_logits = _generate(model, inputs[0][2], [inputs[1][2]], config)
    _generate(model, inputs[0][0], [inputs[1][0]], config)
    after, after_logits = _generate(model, inputs[0][2], [inputs[1][2]], config)
    assert torch.equal(alone, after)
    for a, b in zip(alone_logits, after_logits, strict=True):
        assert torch.equal(a, b)


def test_batched_equals_one_by_one(bundles, inputs) -> None:
    model = bundles["sdpa"][1]
    ids, pixels = inputs
    config = CompressionConfig(method="dycoke", dycoke_k=0.5, dycoke_l=2, dycoke_p=0.7)
    single, means = [], []
    for i, p in zip(ids, pixels, strict=True):
        single.append(_generate(model, i, [p], config))
        means.append(float(model.decode_video_tokens[0]))
    batch, batch_logits = _generate(model, ids, pixels, config)
    for row, (alone, alone_logits) in enumerate(single):
        assert torch.equal(batch[row], alone[0])
        for mine, theirs in zip(batch_logits, alone_logits, strict=True):
            torch.testing.assert_close(mine[row], theirs[0], rtol=1e-5, atol=1e-5)
    assert model.decode_video_tokens.tolist() == pytest.approx(means)


def test_stage_one_only_keeps_transformers_generation(bundles, inputs) -> None:
    """Without dycoke_p the method is TTM before the LLM, and no decode-time count is reported."""
    model = bundles["sdpa"][1]
    config = CompressionConfig(method="dycoke", dycoke_k=0.5)
    assert not config.prunes_in_llm and config.dycoke_l is None
    _, stage_one = _generate(model, inputs[0][0], [inputs[1][0]], config)
    assert model.decode_video_tokens is None
    _, both = _generate(model, inputs[0][0], [inputs[1][0]], CompressionConfig(method="dycoke", dycoke_k=0.5,
                                                                               dycoke_l=1, dycoke_p=0.9))
    torch.testing.assert_close(both[0], stage_one[0], rtol=1e-5, atol=1e-5)  # prefill is not pruned
    assert not torch.allclose(both[1], stage_one[1], rtol=1e-3, atol=1e-3)  # the first decode step is


def test_bad_knobs_name_the_allowed_values(bundles, inputs) -> None:
    model = bundles["sdpa"][1]
    with pytest.raises(ValueError, match=r"dycoke_l must be in \[1, 3\]"):
        _generate(model, inputs[0][0], [inputs[1][0]],
                  CompressionConfig(method="dycoke", dycoke_k=0.5, dycoke_l=N_LAYERS, dycoke_p=0.5))
    with pytest.raises(ValueError, match=r"dycoke_p must be in \(0, 1\]"):
        CompressionConfig(method="dycoke", dycoke_k=0.5, dycoke_p=0.0)
    with pytest.raises(ValueError, match=r"dycoke_l must be an int in \[1"):
        CompressionConfig(method="dycoke", dycoke_k=0.5, dycoke_l=0, dycoke_p=0.5)
    with pytest.raises(ValueError, match="which dycoke_p turns on"):
        CompressionConfig(method="dycoke", dycoke_k=0.5, dycoke_l=2)
    with pytest.raises(ValueError, match="knob of method 'dycoke'"):
        CompressionConfig(method="scc", retention_ratio=0.5, dycoke_p=0.5)
    assert CompressionConfig(method="dycoke", dycoke_k=0.5, dycoke_p=0.7).dycoke_l == 3
