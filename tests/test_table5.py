"""The paper's Eq. 9 and its Table 5: the formula against the paper's own cross-check, and every printed row
against the token count our method returns at the 7B shape (32 x 196 tokens)."""
from __future__ import annotations

from pathlib import Path

import pytest

from llava.eval.flops import LLMShape, implied_tokens, layered_llm_flops, llm_flops, pruned_at_layer
from llava.eval.paper import load_paper
from llava.testing import methods_bench
from llava.testing.architectures import model_config
from llava.testing.pipeline_bench import parse_args

QWEN25_7B = LLMShape(layers=28, hidden=3584, ffn=18944)


def test_eq9_gives_the_papers_100_percent_row() -> None:
    assert llm_flops(6272, QWEN25_7B) / 1e12 == pytest.approx(41.42, abs=0.005)  # printed 41.4
    assert methods_bench.llm_shape("7b") == QWEN25_7B


def test_eq9_by_hand_for_one_layer() -> None:
    shape = LLMShape(layers=1, hidden=2, ffn=3)
    k, r = 5, 4  # 4 k d^2 + 2 k^2 d + 2 k d c, then R ((4 d^2 + 2 d c) + 2 (d k + d (R + 1) / 2))
    assert llm_flops(k, shape, predicted=r) == 80 + 100 + 60 + r * ((16 + 12) + 2 * (10 + 5))


def test_layered_flops_and_their_inverse() -> None:
    assert layered_llm_flops([3098] * 28, QWEN25_7B) == pytest.approx(llm_flops(3098, QWEN25_7B))
    assert implied_tokens(llm_flops(2201, QWEN25_7B), QWEN25_7B) == pytest.approx(2201)
    fastv = {r: layered_llm_flops(pruned_at_layer(6272, round(r * 6272), 3, QWEN25_7B), QWEN25_7B) / 1e12
             for r in (0.5, 0.35, 0.1)}
    assert [round(v, 2) for v in fastv.values()] == [21.40, 16.08, 7.92]  # printed 21.4, 16.1, 8.1
    with pytest.raises(ValueError, match="one token count per layer"):
        layered_llm_flops([6272] * 27, QWEN25_7B)


@pytest.fixture(scope="module")
def rows() -> dict[tuple[str, float], dict]:
    """Table 5 at the 7B's frames and tokens; D = 64 (no count here depends on D)."""
    inputs = methods_bench.synthetic_inputs(model_config("7b"), 32, 64)
    out = methods_bench.table5_rows(load_paper(), inputs, QWEN25_7B, (0.5, 0.35, 0.1))
    return {(row["method"], row["retention"]): row for row in out}


def test_every_printed_row_has_ours_beside_it(rows: dict) -> None:
    paper = load_paper()
    for printed in paper.table5:
        assert rows[(paper.method_of(printed), printed.retention)]["printed"] == printed


@pytest.mark.parametrize("cell, tokens", [
    (("none", 1.0), 6272), (("dycoke", 0.5), 3098), (("dycoke", 0.35), 2201), (("fastv", 0.5), 3136),
    (("fastv", 0.35), 2195), (("visionzip", 0.1), 627), (("pllava", 0.1), 624)])
def test_rows_whose_count_the_paper_fixes_match_within_its_last_digit(rows: dict, cell, tokens: int) -> None:
    row = rows[cell]
    assert row["tokens"] == tokens
    assert abs(row["tflops"] - row["printed"].tflops) <= methods_bench.FLOPS_TOLERANCE
    assert row["note"] == ""


def test_rows_that_differ_say_why(rows: dict) -> None:
    for ratio, implied in ((0.5, 3075), (0.35, 2254), (0.2, 1282)):  # SCC: tau-mode means, not the nominal count
        row = rows[("scc", ratio)]
        assert row["tokens"] == round(ratio * 6272)
        assert abs(row["tflops"] - row["printed"].tflops) > methods_bench.FLOPS_TOLERANCE
        assert "tau-mode" in row["note"] and f"about {implied} tokens" in row["note"]
    assert "about 663 tokens kept from layer 3" in rows[("fastv", 0.1)]["note"]  # printed 8.1, Eq. 9 gives 7.92
    dycoke = rows[("dycoke", 0.1)]
    assert "tokens" not in dycoke and "cannot keep fewer than 1764 of 6272" in dycoke["note"]
    assert rows[("pllava", 0.5)]["printed"] is None and rows[("pllava", 0.5)]["tokens"] == 3136


def test_table5_section_writes_its_file(tmp_path: Path) -> None:
    cfg, _ = parse_args(["--sections", "table5", "--method-retentions", "0.5"])
    path = methods_bench.run_table5(cfg, tmp_path, None, dim=64)
    text = path.read_text()
    assert path.name == "pipeline-table5-float32-cpu.md"
    assert "| dycoke | 50% | dycoke_k=0.7 | 3098 | 18.75 | 45.3 | 18.7 | 45.2 | +0.05 |  |" in text
