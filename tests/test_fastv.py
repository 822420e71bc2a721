"""FastV inside the LLM equals a brute-force reference written from its definition.

The reference runs the tiny LLM with eager attention and `output_attentions` over the whole prompt, reads layer
K-1's attention of the last prompt row (mean over heads) over the video span, keeps the round(r * N) most attended
video tokens (ties to the lower index), and then, without any KV cache, recomputes every step from scratch: layers
below K on the full sequence, layers K and up on the text rows, the kept video rows and the generated rows, with
their original positions.
"""
from __future__ import annotations

import pytest
import torch
from transformers.masking_utils import create_causal_mask

from llava.compression import CompressionConfig
from llava.model.builder import load_pretrained_model
from llava.model.fastv import layer_mean_tokens
from llava.testing.tiny_checkpoint import TinySpec, write_tiny_checkpoint

N_LAYERS = 4


@pytest.fixture(scope="module", params=["original", "hf"])
def bundle(request, tmp_path_factory):
    """A tiny checkpoint with 4 LLM layers (K = 1..3 are valid), in both formats, fp32, eager attention."""
    out = write_tiny_checkpoint(tmp_path_factory.mktemp(request.param), request.param, seed=3,
                                spec=TinySpec(num_hidden_layers=N_LAYERS))
    return load_pretrained_model(str(out), device_map="cpu", attn_implementation="eager", torch_dtype="float32")


@pytest.fixture
def inputs(bundle, mixed_batch_factory):
    return mixed_batch_factory(bundle[0], bundle[2])


def _causal(lm, hidden: torch.Tensor):
    ones = torch.ones(hidden.shape[:2], dtype=torch.long)
    return create_causal_mask(config=lm.model.config, inputs_embeds=hidden, attention_mask=ones, cache=None)


def _layers(lm, hidden: torch.Tensor, positions: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    mask, rope = _causal(lm, hidden), lm.model.rotary_emb(hidden, positions)
    for layer in lm.model.layers[start:stop]:
        hidden = layer(hidden, attention_mask=mask, position_ids=positions, position_embeddings=rope)
    return hidden


def _reference_keep(lm, embeds: torch.Tensor, video: torch.Tensor, k: int, ratio: float) -> list[int]:
    """Prompt rows kept from layer K on, from the eager attention map of the whole prompt [1, L, D]."""
    attentions = lm(inputs_embeds=embeds, output_attentions=True).attentions
    scores = attentions[k - 1][0, :, -1].mean(dim=0)  # (L,): last row, mean over heads
    span = [i for i in range(embeds.shape[1]) if video[i]]
    n_keep = max(1, round(ratio * len(span)))
    chosen = sorted(span, key=lambda i: (-float(scores[i]), i))[:n_keep]
    return sorted([i for i in range(embeds.shape[1]) if not video[i]] + chosen)


def _reference_logits(lm, embeds: torch.Tensor, keep: list[int], k: int) -> torch.Tensor:
    """No cache: the full sequence [1, S, D] below K, the kept rows (original positions) from K on -> [1, |keep|, V]."""
    positions = torch.arange(embeds.shape[1])[None]  # (1, S)
    hidden = _layers(lm, embeds, positions, 0, k)[:, keep]  # explicit removal of the dropped rows
    hidden = _layers(lm, hidden, positions[:, keep], k, N_LAYERS)
    return lm.lm_head(lm.model.norm(hidden))


def _reference_generate(model, ids, pixels, config: CompressionConfig, steps: int) -> tuple[torch.Tensor, list]:
    lm, k = model.language_model, config.fastv_layer
    packed = model.prepare_inputs(ids, [pixels], ["video"], compression=config)
    embeds, video = packed.inputs_embeds, packed.video_mask[0]
    keep = _reference_keep(lm, embeds, video, k, config.retention_ratio)
    first = _reference_logits(lm, embeds, keep, k)[0]
    tokens = []
    for _ in range(steps):
        logits = _reference_logits(lm, embeds, keep, k)[0, -1]
        tokens.append(int(logits.argmax()))
        keep.append(embeds.shape[1])  # every generated row is kept
        embeds = torch.cat([embeds, lm.get_input_embeddings()(torch.tensor([[tokens[-1]]]))], dim=1)
    return first, tokens


@pytest.mark.parametrize(("k", "ratio"), [(1, 0.25), (2, 0.1), (3, 0.5), (2, 1.0)])
def test_logits_and_tokens_equal_the_brute_force_reference(bundle, inputs, k, ratio) -> None:
    model = bundle[1]
    ids, pixels = inputs[0][0], inputs[1][1]
    config = CompressionConfig(method="fastv", retention_ratio=ratio, fastv_layer=k)
    with torch.no_grad():
        first, tokens = _reference_generate(model, ids, pixels, config, steps=6)
        ours = model(ids, images=[pixels], modalities=["video"], compression=config)
    assert int(ours.video_in) == 3 * 16 and int(ours.video_kept) == max(1, round(ratio * 48))
    torch.testing.assert_close(ours.logits[0], first, rtol=1e-5, atol=1e-5)
    generated = model.generate(ids, images=[pixels], modalities=["video"], compression=config, do_sample=False,
                               max_new_tokens=6, eos_token_id=None)
    assert generated[0].tolist() == tokens


def test_full_ratio_equals_no_compression(bundle, inputs) -> None:
    model = bundle[1]
    ids, pixels = inputs[0][2], inputs[1][0]
    kwargs = dict(images=[pixels], modalities=["video"], do_sample=False, max_new_tokens=6, eos_token_id=None)
    none = model.generate(ids, compression=CompressionConfig(method="none"), **kwargs)
    full = model.generate(ids, compression=CompressionConfig(method="fastv", retention_ratio=1.0), **kwargs)
    assert torch.equal(none, full)


def test_batched_equals_one_by_one(bundle, inputs) -> None:
    model = bundle[1]
    ids, pixels = inputs
    config = CompressionConfig(method="fastv", retention_ratio=0.3, fastv_layer=2)
    kwargs = dict(do_sample=False, max_new_tokens=6, eos_token_id=None, compression=config)
    single = [model.generate(i, images=[p], modalities=["video"], **kwargs)[0]
              for i, p in zip(ids, pixels, strict=True)]
    batch = model.generate(ids, images=pixels, modalities=["video"] * 3, **kwargs)
    for row, alone in zip(batch, single, strict=True):
        assert torch.equal(row, alone)
    with torch.no_grad():
        batch_out = model(ids, images=pixels, modalities=["video"] * 3, compression=config)
        for row, (i, p) in enumerate(zip(ids, pixels, strict=True)):
            alone = model(i, images=[p], modalities=["video"], compression=config)
            torch.testing.assert_close(batch_out.logits[row, -1], alone.logits[0, -1], rtol=1e-5, atol=1e-5)
    assert batch_out.video_kept.tolist() == [round(0.3 * n * 16) for n in (2, 3, 1)]


def test_sampling_is_seeded_and_stops_on_eos(bundle, inputs) -> None:
    model = bundle[1]
    ids, pixels = inputs[0][0], inputs[1][0]
    kwargs = dict(images=[pixels], modalities=["video"], max_new_tokens=8,
                  compression=CompressionConfig(method="fastv", retention_ratio=0.25, fastv_layer=1))
    torch.manual_seed(0)
    first = model.generate(ids, do_sample=True, temperature=5.0, eos_token_id=None, **kwargs)
    torch.manual_seed(0)
    assert torch.equal(first, model.generate(ids, do_sample=True, temperature=5.0, eos_token_id=None, **kwargs))
    greedy = model.generate(ids, do_sample=False, eos_token_id=None, **kwargs)[0]
    assert not torch.equal(first[0], greedy)
    stopped = model.generate(ids, do_sample=False, eos_token_id=int(greedy[1]), **kwargs)[0]
    assert stopped.tolist() == greedy[:2].tolist()


def test_bad_layer_and_ratio_name_the_range(bundle, inputs) -> None:
    model = bundle[1]
    ids, pixels = inputs[0][0], inputs[1][0]
    with pytest.raises(ValueError, match=r"\[1, 3\]"):
        model.generate(ids, images=[pixels], modalities=["video"], max_new_tokens=2,
                       compression=CompressionConfig(method="fastv", retention_ratio=0.5, fastv_layer=N_LAYERS))
    with pytest.raises(ValueError, match=r"fastv_layer must be an int in \[1"):
        CompressionConfig(method="fastv", retention_ratio=0.5, fastv_layer=0)
    with pytest.raises(ValueError, match=r"retention_ratio must be in \(0, 1\]"):
        CompressionConfig(method="fastv", retention_ratio=1.5)
    with pytest.raises(ValueError, match="knob of method 'fastv'"):
        CompressionConfig(method="scc", retention_ratio=0.5, fastv_layer=2)
    assert CompressionConfig(method="fastv", retention_ratio=0.5).fastv_layer == 3


def test_layer_mean_tokens_gives_the_flops_fraction() -> None:
    """At the 7B's 28 layers, K = 3, keeping 10% of 6,272 costs about 19.6% of keeping all of them."""
    n, kept = 6272, round(0.1 * 6272)
    assert layer_mean_tokens(n, kept, 3, 28) / n == pytest.approx(0.196, abs=1e-3)
    assert layer_mean_tokens(n, n, 3, 28) == n
