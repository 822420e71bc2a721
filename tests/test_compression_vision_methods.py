"""PLLaVA and VisionZip: the methods that need more than the pooled features (the unpooled grid, the tower's last
layer's attention and keys), against brute-force references written from the methods' definitions; the tower's
attention against transformers' eager attention; the model computing those inputs only for them; and the front
ends (run config, CLI, lmms-eval model_args, pictures) reaching them."""
from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from llava import infer
from llava.compression import CompressionConfig, compress
from llava.compression.pllava import ratio_shape
from llava.compression.types import VisualExtras
from llava.conversation import video_prompt_ids
from llava.demo_clip import make_demo_clip
from llava.model import modeling
from llava.model.modeling import pool_frames
from llava.run_config import load_config
from llava.runtime import load_for_run, run_inference
from llava.visualize import draw_assignment_grid

TINY_TOKENS = 16  # tiny tower: 7x7 patches -> bilinear 4x4 per frame


def pllava_config(shape: tuple[int, int, int]) -> CompressionConfig:
    return CompressionConfig(method="pllava", pool_shape=shape)


def visionzip_config(ratio: float) -> CompressionConfig:
    return CompressionConfig(method="visionzip", retention_ratio=ratio)


# ---- config ---------------------------------------------------------------------------------------------------
def test_pool_shape_is_validated_and_stored_as_a_tuple() -> None:
    config = CompressionConfig(method="pllava", pool_shape=[16, 8, 8])
    assert config.pool_shape == (16, 8, 8) and hash(config) == hash(pllava_config((16, 8, 8)))
    with pytest.raises(ValueError, match=r"pool_shape is a knob of method 'pllava', not of 'scc'; 'scc' takes"):
        CompressionConfig(method="scc", tau=0.9, pool_shape=(16, 8, 8))
    for bad in [(16, 8), (16, 8, 8, 1), (0, 8, 8), (16, -1, 8), (16, 8, 8.0), (True, 8, 8), "16x8x8", 16]:
        with pytest.raises(ValueError, match=r"pool_shape must be 3 positive ints"):
            CompressionConfig(method="pllava", pool_shape=bad)
    for both in [{}, {"retention_ratio": 0.1, "pool_shape": (1, 1, 1)}, {"tau": 0.9}]:
        with pytest.raises(ValueError, match=r"set retention_ratio or pool_shape \(exactly one"):
            CompressionConfig(method="pllava", **both)
    with pytest.raises(ValueError, match=r"set retention_ratio \(exactly one"):
        CompressionConfig(method="visionzip", tau=0.9)


# ---- PLLaVA ---------------------------------------------------------------------------------------------------
def adaptive_mean_reference(grid: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """grid [F, side, side, D] -> [T'H'W', D]: output cell i of a side of In cells pooled to Out averages input
    cells [floor(i In / Out), ceil((i + 1) In / Out)), frame-major, row-major."""
    def span(i: int, n_in: int, n_out: int) -> range:
        return range(i * n_in // n_out, -(-(i + 1) * n_in // n_out))

    n_frames, side, _, _ = grid.shape
    out = []
    for t in range(shape[0]):
        for h in range(shape[1]):
            for w in range(shape[2]):
                cells = [grid[f, r, c] for f in span(t, n_frames, shape[0]) for r in span(h, side, shape[1])
                         for c in span(w, side, shape[2])]
                out.append(torch.stack(cells).mean(dim=0))
    return torch.stack(out)


@pytest.mark.parametrize("shape", [(5, 7, 7), (2, 3, 4), (3, 4, 5), (1, 1, 1), (5, 2, 7), (4, 6, 3)])
def test_pllava_equals_the_bin_rule_mean(shape: tuple[int, int, int]) -> None:
    n_frames, side, dim = 5, 7, 6
    grid = torch.randn(n_frames, side * side, dim, generator=torch.Generator().manual_seed(1))
    result = compress(pool_frames(grid, "bilinear"), pllava_config(shape), extras=VisualExtras(grid=grid))
    expected = adaptive_mean_reference(grid.view(n_frames, side, side, dim), shape)
    torch.testing.assert_close(result.tokens, expected, rtol=1e-6, atol=1e-6)
    assert result.stats.pool_shape == shape and result.stats.tokens_out == math.prod(shape)
    assert result.stats.tokens_in == n_frames * TINY_TOKENS


def test_pllava_assigns_each_pooled_token_to_the_bin_of_its_centre() -> None:
    grid = torch.randn(2, 49, 3)
    result = compress(pool_frames(grid, "bilinear"), pllava_config((2, 3, 3)), extras=VisualExtras(grid=grid))
    # a 4-cell side: centres at 1/8, 3/8, 5/8, 7/8 of the frame -> thirds 0, 1, 1, 2
    rows = torch.tensor([0, 1, 1, 2])
    frame0 = rows[:, None] * 3 + rows[None, :]
    assert torch.equal(result.assignment, torch.stack([frame0, frame0 + 9]).view(2, 16))
    halves = compress(pool_frames(grid, "bilinear"), pllava_config((1, 2, 2)), extras=VisualExtras(grid=grid))
    quadrant = torch.tensor([[0, 0, 1, 1]] * 2 + [[2, 2, 3, 3]] * 2).flatten()
    assert torch.equal(halves.assignment, torch.stack([quadrant, quadrant]))


def test_pllava_rejects_shapes_that_do_not_fit_and_missing_grids() -> None:
    grid = torch.randn(4, 49, 3)
    pooled = pool_frames(grid, "bilinear")
    for shape in [(5, 2, 2), (2, 8, 2), (2, 2, 8)]:
        with pytest.raises(ValueError, match=r"frames must be in \[1, 4\].*rows, columns in \[1, 7\]"):
            compress(pooled, pllava_config(shape), extras=VisualExtras(grid=grid))
    with pytest.raises(ValueError, match=r"needs \('grid',\)"):
        compress(pooled, pllava_config((2, 2, 2)))


def test_ratio_shape_hits_the_known_exact_candidates() -> None:
    assert ratio_shape(32, 27, 3136) == (16, 14, 14)  # 50% of 32 x 196, exact
    assert ratio_shape(32, 27, 627) == (4, 12, 13)  # 10%: 624, within 1%; (1, 25, 25) = 625 pools every frame
    assert ratio_shape(32, 27, 2195) == (8, 16, 17)  # 35%: 2176 and (4, 23, 24) = 2208 are within 1%
    assert ratio_shape(32, 27, 6272) == (32, 14, 14)
    assert ratio_shape(7, 5, 1) == (1, 1, 1)


@pytest.mark.parametrize(("n_frames", "side"), [(4, 5), (6, 4), (5, 3)])
def test_ratio_shape_follows_its_rule_for_every_budget(n_frames: int, side: int) -> None:
    shapes = [(t, h, w) for t in range(1, n_frames + 1) for h in range(1, side + 1) for w in range(1, side + 1)
              if n_frames % t == 0 and w - h in (0, 1)]
    for k in range(1, n_frames * side * side + 1):
        chosen = ratio_shape(n_frames, side, k)
        assert chosen in shapes
        error = abs(math.prod(chosen) - k)
        close = [s for s in shapes if abs(math.prod(s) - k) <= 0.01 * k]
        if close:
            assert error <= 0.01 * k and chosen[0] == max(s[0] for s in close)
        else:
            assert error == min(abs(math.prod(s) - k) for s in shapes)


def test_pllava_ratio_mode_reports_the_shape_it_chose() -> None:
    grid = torch.randn(32, 27 * 27, 4)
    result = compress(pool_frames(grid, "bilinear"), CompressionConfig(method="pllava", retention_ratio=0.1),
                      extras=VisualExtras(grid=grid))
    assert result.stats.pool_shape == (4, 12, 13) and result.stats.tokens_out == 624
    assert result.stats.tokens_in == 32 * 196


# ---- VisionZip ------------------------------------------------------------------------------------------------
def visionzip_reference(x: torch.Tensor, attention: torch.Tensor, keys: torch.Tensor,
                        k: int) -> tuple[torch.Tensor, list[int]]:
    """A per-frame loop: frame f keeps floor((f+1)K/F) - floor(fK/F) tokens, floor(54 k_f / 64) dominant (highest
    score, ties to the lower index; spatial order), the rest contextual: targets every max(1, n_rest // c)-th
    remaining token (first c), every other remaining token added to its most key-similar target (cosine, ties
    to the first), contextual = target + mean(assigned). Returns tokens and the assignment (-1 = dropped)."""
    n_frames, n_tokens, _ = x.shape
    tokens: list[torch.Tensor] = []
    assignment: list[int] = []
    for f in range(n_frames):
        budget = (f + 1) * k // n_frames - f * k // n_frames
        n_dominant = budget * 54 // 64
        n_contextual = budget - n_dominant
        ranked = sorted(range(n_tokens), key=lambda j: (-float(attention[f, j]), j))
        dominant = sorted(ranked[:n_dominant])
        rest = [j for j in range(n_tokens) if j not in dominant]
        targets = rest[::max(1, len(rest) // n_contextual)][:n_contextual] if n_contextual else []
        members: dict[int, list[int]] = {t: [] for t in targets}
        for j in rest:
            if targets and j not in targets:
                sims = [float(torch.cosine_similarity(keys[f, j], keys[f, t], dim=0)) for t in targets]
                members[targets[sims.index(max(sims))]].append(j)
        position = {j: len(tokens) + i for i, j in enumerate(dominant + targets)}
        tokens += [x[f, j] for j in dominant]
        tokens += [x[f, t] + (x[f, members[t]].mean(dim=0) if members[t] else 0) for t in targets]
        owner = {j: t for t in targets for j in members[t]}
        assignment += [position.get(j, position[owner[j]] if j in owner else -1) for j in range(n_tokens)]
    return torch.stack(tokens), assignment


@pytest.mark.parametrize(("n_frames", "n_tokens", "ratio", "ties"),
                         [(3, 16, 0.5, False), (4, 16, 0.3, True), (5, 25, 0.13, False), (3, 16, 1.0, False),
                          (6, 16, 0.04, True), (2, 9, 0.2, False)])
def test_visionzip_equals_a_per_frame_loop(n_frames: int, n_tokens: int, ratio: float, ties: bool) -> None:
    gen = torch.Generator().manual_seed(n_frames * 100 + n_tokens)
    x = torch.randn(n_frames, n_tokens, 8, generator=gen)
    attention = torch.rand(n_frames, n_tokens, generator=gen)
    attention = (attention * 3).floor() if ties else attention  # many equal scores: the lower index wins
    keys = torch.randn(n_frames, n_tokens, 5, generator=gen)
    result = compress(x, visionzip_config(ratio), extras=VisualExtras(attention=attention, keys=keys))
    k = max(1, round(ratio * n_frames * n_tokens))
    expected, assignment = visionzip_reference(x, attention, keys, k)
    assert result.tokens.shape[0] == k
    torch.testing.assert_close(result.tokens, expected, rtol=1e-5, atol=1e-5)
    assert result.assignment.flatten().tolist() == assignment


@pytest.mark.parametrize("ratio", [0.01, 0.05, 0.1, 0.35, 0.5, 0.99, 1.0])
def test_visionzip_budget_is_exact_and_evenly_spread(ratio: float) -> None:
    n_frames, n_tokens = 32, 196
    x = torch.randn(n_frames, n_tokens, 4)
    extras = VisualExtras(attention=torch.rand(n_frames, n_tokens), keys=torch.randn(n_frames, n_tokens, 3))
    result = compress(x, visionzip_config(ratio), extras=extras)
    k = max(1, round(ratio * n_frames * n_tokens))
    assert result.stats.tokens_out == k == result.tokens.shape[0]
    kept = result.assignment
    per_frame = [len(set(row[row >= 0].tolist())) for row in kept]
    assert sum(per_frame) == k and max(per_frame) - min(per_frame) <= 1
    assert sorted(set(kept[kept >= 0].tolist())) == list(range(k)), "every kept token is some token's target"
    if k >= n_frames:
        assert bool((kept >= 0).all()), "VisionZip merges every token it does not keep"


def test_visionzip_needs_the_tower_attention() -> None:
    with pytest.raises(ValueError, match=r"needs \('tower_attention',\).*\['attention', 'keys'\]"):
        compress(torch.randn(2, 16, 4), visionzip_config(0.5))


# ---- the tower's attention ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sdpa_model(tiny_original_dir: Path):
    from llava.model.builder import load_pretrained_model

    return load_pretrained_model(str(tiny_original_dir), device_map="cpu", attn_implementation="sdpa",
                                 torch_dtype="float32")[1]


def test_tower_attention_equals_eager_attention_and_leaves_the_features_alone(sdpa_model) -> None:
    pixels = torch.randn(3, 3, 56, 56, generator=torch.Generator().manual_seed(2))
    grid, attention, keys = sdpa_model.encode_frames_with_attention(pixels)
    assert torch.equal(grid, sdpa_model.encode_frames(pixels)), "asking for attention changes nothing else"
    assert sdpa_model.vision_tower.config._attn_implementation == "sdpa"
    eager = copy.deepcopy(sdpa_model.vision_tower)
    eager.set_attn_implementation("eager")
    out = eager(pixel_values=pixels, output_attentions=True, output_hidden_states=True)
    torch.testing.assert_close(attention, out.attentions[-1].mean(dim=1).mean(dim=1), rtol=1e-5, atol=1e-6)
    last = eager.encoder.layers[-1]
    heads = last.self_attn.num_heads
    raw = last.self_attn.k_proj(last.layer_norm1(out.hidden_states[-2]))  # (F, P, V)
    torch.testing.assert_close(keys, raw.view(3, 49, heads, -1).mean(dim=2), rtol=1e-5, atol=1e-6)


def test_attention_and_keys_are_pooled_as_the_features(sdpa_model) -> None:
    pixels = torch.randn(3, 3, 56, 56)
    grid, attention, keys = sdpa_model.encode_frames_with_attention(pixels)
    for mode, stride in [("bilinear", 2), ("average", 2), ("bilinear", 3)]:
        sdpa_model.config.mm_spatial_pool_mode, sdpa_model.config.mm_spatial_pool_stride = mode, stride
        pooled, extras = sdpa_model.visual_inputs(pixels, ("tower_attention", "grid"), frame_batch_size=2)
        torch.testing.assert_close(pooled, pool_frames(grid, mode, stride))
        torch.testing.assert_close(extras.attention, pool_frames(attention[..., None], mode, stride)[..., 0])
        torch.testing.assert_close(extras.keys, pool_frames(keys, mode, stride))
        torch.testing.assert_close(extras.grid, grid)
    sdpa_model.config.mm_spatial_pool_mode, sdpa_model.config.mm_spatial_pool_stride = "bilinear", 2


# ---- the model computes extras only when asked, in one tower pass ---------------------------------------------
@pytest.mark.parametrize(("config", "present"), [
    (CompressionConfig(retention_ratio=0.25), set()),
    (CompressionConfig(method="none"), set()),
    (pllava_config((2, 2, 2)), {"grid"}),
    (visionzip_config(0.25), {"attention", "keys"}),
])
def test_extras_are_computed_only_for_the_methods_that_need_them(sdpa_model, monkeypatch, config,
                                                                 present: set[str]) -> None:
    seen: list[VisualExtras] = []
    real = modeling.compress
    monkeypatch.setattr(modeling, "compress", lambda *a, extras=None, **kw: seen.append(extras) or real(
        *a, extras=extras, **kw))
    tower_runs = []
    hook = sdpa_model.vision_tower.embeddings.register_forward_hook(lambda *args: tower_runs.append(1))
    attention_calls = []
    real_attention = modeling.layer_attention
    monkeypatch.setattr(modeling, "layer_attention", lambda *a: attention_calls.append(1) or real_attention(*a))
    try:
        sdpa_model.encode_video(torch.randn(4, 3, 56, 56), config)
    finally:
        hook.remove()
    assert {name for name in ("grid", "attention", "keys") if getattr(seen[0], name) is not None} == present
    assert len(tower_runs) == 1, "one tower pass, whatever the method needs"
    assert len(attention_calls) == (1 if "attention" in present else 0)



@pytest.mark.parametrize("config", [pllava_config((3, 2, 3)), visionzip_config(0.3),
                                    CompressionConfig(method="pllava", retention_ratio=0.2)])
def test_batched_encode_videos_equals_one_by_one(tiny_model, config: CompressionConfig) -> None:
    videos = [torch.randn(n, 3, 56, 56, generator=torch.Generator().manual_seed(n)) for n in (3, 5)]
    together = tiny_model.encode_videos(videos, config)
    for video, encoded in zip(videos, together, strict=True):
        alone = tiny_model.encode_video(video, config)
        torch.testing.assert_close(encoded.tokens, alone.tokens, rtol=1e-5, atol=1e-5)
        assert torch.equal(encoded.assignment, alone.assignment) and encoded.stats == alone.stats


@pytest.mark.parametrize("config", [pllava_config((2, 2, 3)), visionzip_config(0.25)])
def test_compress_once_reuse_generates_as_fresh(tiny_model_bundle, config: CompressionConfig) -> None:
    tokenizer, model = tiny_model_bundle[0], tiny_model_bundle[1]
    pixels = torch.randn(4, 3, 56, 56, generator=torch.Generator().manual_seed(3))
    video = model.encode_video(pixels, config)
    gen = {"do_sample": False, "max_new_tokens": 5}
    for question in ["What moves?", "What colour is it?"]:
        ids = video_prompt_ids(question, tokenizer)[None]
        fresh = model.generate(ids, images=[pixels], modalities=["video"], compression=config, **gen)
        assert torch.equal(model.generate(ids, videos=[video], **gen), fresh)


# ---- front ends -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_demo_clip(tmp_path_factory.mktemp("clip") / "clip.mp4", num_frames=8, size=(48, 40), fps=8)


def test_cli_flags_reach_pllava_and_replace_the_configs_budget() -> None:
    args = infer.build_parser().parse_args(["--method", "pllava", "--pool-shape", "4,2,3"])
    config = infer.load_run_config(args)
    assert config.compression.pool_shape == (4, 2, 3) and config.compression.retention_ratio is None
    with pytest.raises(SystemExit):
        infer.build_parser().parse_args(["--pool-shape", "4,2"])
    with pytest.raises(ValueError, match=r"--pool-shape: compression.pool_shape must be 3 positive ints"):
        infer.load_run_config(infer.build_parser().parse_args(["--method", "pllava", "--pool-shape", "4,0,3"]))


def test_run_inference_reports_count_and_shape(tiny_original_dir: Path, clip: Path, tmp_path: Path) -> None:
    base = {"model.path": str(tiny_original_dir), "model.device": "cpu", "video.frames": 4,
            "generation.max_new_tokens": 3}
    loaded = load_for_run(load_config(None, base))
    pllava = load_config(None, {**base, "compression.method": "pllava", "compression.pool_shape": [2, 3, 3]})
    report = run_inference(pllava, clip, "Hi", visualize=tmp_path / "p.png", loaded=loaded)
    assert report.tokens_after == 18 and report.compression_stats["pool_shape"] == (2, 3, 3)
    assert "pooled to 2x3x3" in infer.format_report(report) and (tmp_path / "p.png").is_file()
    zipped = load_config(None, {**base, "compression.method": "visionzip", "compression.retention_ratio": 0.25})
    report = run_inference(zipped, clip, "Hi", loaded=loaded)
    assert report.tokens_after == round(0.25 * 4 * TINY_TOKENS) and report.method == "visionzip"


def test_lmms_model_args_take_pool_shape(tiny_original_dir: Path) -> None:
    lmms = pytest.importorskip("llava.eval.lmms_model")
    run = lmms.run_config_from_args("llava-ov-0.5b-scissor", {"method": "pllava", "pool_shape": "16x8x8"})
    assert run.compression.pool_shape == (16, 8, 8) and run.compression.tau is None
    assert run.compression.retention_ratio is None
    with pytest.raises(ValueError, match=r"pool_shape must look like 16x8x8"):
        lmms.run_config_from_args(None, {"method": "pllava", "pool_shape": "16,8"})


@pytest.mark.parametrize(("args", "tokens"), [({"method": "pllava", "pool_shape": "2x2x3"}, 12),
                                              ({"method": "visionzip", "retention_ratio": 0.25}, 16)])
def test_lmms_model_reuses_one_block_per_video(tiny_original_dir: Path, clip: Path, tmp_path: Path, args: dict,
                                                tokens: int) -> None:
    lmms = pytest.importorskip("llava.eval.lmms_model")
    from lmms_eval.api.instance import Instance

    model = lmms.LlavaScissor(pretrained=str(tiny_original_dir), max_frames_num=4, video_backend="pyav",
                              device="cpu", log_dir=str(tmp_path), **args)
    model.task_dict = {"toy": {"test": [{"q": f"Question {i}?"} for i in range(2)]}}
    gen = {"max_new_tokens": 3, "do_sample": False}
    requests = [Instance("generate_until", (f"Question {i}?", dict(gen), lambda doc: [str(clip)], i, "toy", "test"),
                         idx=0, metadata={"task": "toy", "doc_id": i, "repeats": 1}) for i in range(2)]
    assert len(model.generate_until(requests)) == 2
    assert model.cache.counters.misses == 1 and model.cache.counters.hits == 1
    (block,) = model.cache.entries.values()
    assert block.video.stats.tokens_out == tokens and block.video.compression.method == args["method"]
    records = [json.loads(line) for log in tmp_path.glob("rank*.jsonl") for line in log.read_text().splitlines()]
    shape = [int(n) for n in args["pool_shape"].split("x")] if "pool_shape" in args else None
    assert [r["tokens_out"] for r in records] == [tokens] * 2 and [r["pool_shape"] for r in records] == [shape] * 2


def test_picture_darkens_dropped_patches() -> None:
    frames = np.full((2, 32, 32, 3), 200, dtype=np.uint8)
    assignment = np.array([[-1] * 16, [0] * 8 + [1] * 8])
    picture = np.asarray(draw_assignment_grid(frames, assignment, title=None, tile=32))
    assert picture.shape[0] > 0 and picture[10, 10].sum() < picture[10, 50].sum()
