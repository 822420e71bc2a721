"""The serving plugin's vLLM-free parts: served methods, budget parsing, token counts, vLLM's pruning flags as
retention ratios, registration names, vLLM-ready checkpoints.

These run in the package's own environment; the engine tests are in test_serving_vllm.py / test_serving_server.py.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from llava.compression import METHODS, CompressionConfig, compress
from llava.compression.types import VisualExtras
from llava.conversation import video_prompt_ids
from llava.serving import budget, plugin
from llava.testing.tiny_checkpoint import TinySpec, main, vllm_spec, write_tiny_checkpoint

ROOT = Path(__file__).resolve().parent.parent
SHAPES = [(32, 196, 0.1), (8, 196, 0.35), (1, 196, 0.001), (9, 16, 0.5), (16, 16, 0.25), (7, 3, 0.999)]


@pytest.mark.parametrize("method", budget.SERVABLE_METHODS)
@pytest.mark.parametrize(("frames", "tokens", "ratio"), SHAPES)
def test_compressed_count_is_what_compress_returns(method: str, frames: int, tokens: int, ratio: float) -> None:
    features = torch.randn(frames, tokens, 8, generator=torch.Generator().manual_seed(frames))
    kept = compress(features, CompressionConfig(method=method, retention_ratio=ratio)).tokens.shape[0]
    assert budget.VideoBudget(method, ratio).token_count(frames, tokens) == kept


def test_uncompressed_count_is_stock_llava_onevision() -> None:
    # stock vLLM: pooled tokens of every frame plus one image_newline, whatever the method
    for frames, tokens in ((32, 196), (1, 16), (9, 16)):
        for method in budget.SERVABLE_METHODS:
            assert budget.VideoBudget(method, 1.0).token_count(frames, tokens) == frames * tokens + 1


# ---- which methods are served ----------------------------------------------------------------------------------
def test_served_methods_are_the_exact_count_methods_that_need_only_pooled_features() -> None:
    assert budget.SERVABLE_METHODS == ("scc", "random", "uniform", "l2norm", "evs", "vidcom2")
    reasons = {m: budget.unservable_reason(m) for m in METHODS if m not in budget.SERVABLE_METHODS}
    assert "unpooled projector grid" not in reasons["pllava"]  # its count rules it out first
    assert "nearest that its own knob (pool_shape) allows" in reasons["pllava"]
    assert "nearest that its own knob (dycoke_k) allows" in reasons["dycoke"]
    assert "tower's attention and keys" in reasons["visionzip"] and "SigLIP" in reasons["visionzip"]
    assert "retention_ratio 1.0" in reasons["none"]
    assert "inside the language model" in reasons["fastv"]


@pytest.mark.parametrize("method", ["dycoke", "pllava"])
def test_a_method_with_its_own_budget_knob_misses_k_at_a_ratio(method: str) -> None:
    """Why such methods are not served: at some ratio their output count is not the placeholder count K."""
    frames, tokens, ratio = 32, 196, 0.35
    features = torch.randn(frames, tokens, 8, generator=torch.Generator().manual_seed(0))
    extras = VisualExtras(grid=torch.randn(frames, 729, 8)) if method == "pllava" else None
    kept = compress(features, CompressionConfig(method=method, retention_ratio=ratio), extras=extras)
    assert kept.tokens.shape[0] != CompressionConfig(retention_ratio=ratio).target_tokens(frames * tokens)


@pytest.mark.parametrize(("method", "message"), [
    ("foo", r"'method' must be one of the served methods \['scc', 'random', .*'vidcom2'\], got 'foo'"),
    ("pllava", r"'method' 'pllava' cannot be served: its count .*Served methods: \['scc', .*'vidcom2'\]"),
    ("visionzip", r"'visionzip' cannot be served: it needs the vision tower's attention"),
    ("dycoke", r"'dycoke' cannot be served: its count at a ratio is the nearest"),
    ("none", r"'none' cannot be served: it keeps every token"),
    ("fastv", r"'fastv' cannot be served: it prunes inside the language model"),
    (3, r"must be one of the served methods .*, got 3"),
])
def test_unservable_method_is_rejected_with_the_reason_and_the_served_methods(method: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        budget.requested_budget({"method": method, "retention_ratio": 0.1})


# ---- the budget a request gets -------------------------------------------------------------------------------
def test_budget_in_effect_and_its_errors() -> None:
    assert budget.requested_budget({}) == budget.VideoBudget("scc", 1.0)
    assert budget.requested_budget({"retention_ratio": None, "num_frames": 8}) == budget.VideoBudget()
    assert budget.requested_budget({"retention_ratio": 0.1}) == budget.VideoBudget("scc", 0.1)
    assert budget.requested_budget({"retention_ratio": 1}).ratio == 1.0
    assert budget.requested_budget({"method": "evs", "retention_ratio": 0.25}) == budget.VideoBudget("evs", 0.25)
    for bad, reason in ((0, r"in \(0, 1\], got 0"), (1.5, r"in \(0, 1\], got 1.5"), (float("nan"), "got nan"),
                        ("0.1", "must be a number"), (True, "must be a number")):
        with pytest.raises(ValueError, match=f"mm_processor_kwargs 'retention_ratio'.*{reason}"):
            budget.requested_budget({"method": "vidcom2", "retention_ratio": bad})
    with pytest.raises(ValueError, match="'tau' .* cannot be served.*Use 'retention_ratio'"):
        budget.requested_budget({"tau": 0.9})
    with pytest.raises(ValueError, match="'tau'"):
        budget.requested_budget({"tau": 0.9, "retention_ratio": 0.1})
    with pytest.raises(ValueError, match=r"'method' 'evs' needs 'retention_ratio' in \(0, 1\]"):
        budget.requested_budget({"method": "evs"})


def test_compression_only_below_one() -> None:
    assert budget.VideoBudget("evs", 1.0).compression() is None
    assert budget.VideoBudget(ratio=0.25).compression() == CompressionConfig(retention_ratio=0.25)
    assert budget.VideoBudget("vidcom2", 0.5).compression() == CompressionConfig(method="vidcom2",
                                                                                 retention_ratio=0.5)


def test_empty_video_is_rejected() -> None:
    with pytest.raises(ValueError, match="0 x 196"):
        budget.VideoBudget(ratio=0.1).token_count(0, 196)


def test_serving_keys_never_reach_the_hf_processor() -> None:
    kwargs = {"method": "evs", "retention_ratio": 0.1, "tau": 0.9, "do_resize": True}
    assert budget.without_serving_keys(kwargs) == {"do_resize": True}


# ---- vLLM's --video-pruning-rate q / --video-pruning-method ----------------------------------------------------
def test_pruning_rate_is_one_minus_the_retention_ratio() -> None:
    assert budget.retention_from_pruning_rate(0.75) == 0.25
    assert budget.retention_from_pruning_rate(0) == 1.0
    assert budget.retention_from_pruning_rate(0.9) == 0.1  # not 1 - 0.9 = 0.09999999999999998
    # ... which would keep one token fewer than r = 0.1 at F * T = 15 (round(1.4999999999999998) = 1)
    assert budget.VideoBudget(ratio=budget.retention_from_pruning_rate(0.9)).token_count(15, 1) == 2
    for bad in (1.0, -0.1, "0.5", None, True):
        with pytest.raises(ValueError, match=r"--video-pruning-rate must be a number in \[0, 1\)"):
            budget.retention_from_pruning_rate(bad)


def test_pruning_flags_become_the_engine_default_and_a_request_overrides_them() -> None:
    assert budget.pruning_defaults(None, {"retention_ratio": 0.1}) == {}  # rate 0 or unset: pruning off
    defaults = budget.pruning_defaults(("evs", 0.75), {"do_resize": True})
    assert defaults == {"method": "evs", "retention_ratio": 0.25}
    assert budget.requested_budget(defaults) == budget.VideoBudget("evs", 0.25)
    assert budget.requested_budget({**defaults, "retention_ratio": 0.5}) == budget.VideoBudget("evs", 0.5)
    assert budget.requested_budget({**defaults, "method": "scc"}) == budget.VideoBudget("scc", 0.25)
    assert budget.requested_budget({**defaults, "retention_ratio": 1.0}).compression() is None
    vidcom2 = budget.pruning_defaults(("vidcom2", 0.9), {})
    assert budget.requested_budget(vidcom2).token_count(32, 196) == round(0.1 * 32 * 196)


def test_pruning_flags_and_our_engine_kwargs_together_are_rejected() -> None:
    for engine in ({"retention_ratio": 0.1}, {"method": "scc"}, {"tau": 0.9}):
        with pytest.raises(ValueError, match=r"--video-pruning-rate 0.75 and --mm-processor-kwargs \[.*\] both set"):
            budget.pruning_defaults(("evs", 0.75), engine)
    with pytest.raises(ValueError, match=r"--video-pruning-method must be one of \['evs', 'vidcom2'\], got 'scc'"):
        budget.pruning_defaults(("scc", 0.75), {})


# ---- scripts/serve.sh: the flags it hands vLLM ----------------------------------------------------------------
def serve_sh(tmp_path, *args: str) -> subprocess.CompletedProcess:
    """Run serve.sh with PYTHON standing in for a vLLM interpreter: it answers serve.sh's vLLM probe, prints the
    server's command line (one argument a line) instead of starting it, and runs everything else for real."""
    fake = tmp_path / "python"
    fake.write_text(f"""#!/usr/bin/env bash
if [[ $1 == -c && $2 == "import vllm" ]]; then exit 0; fi
if [[ $1 == -m && $2 == vllm.entrypoints.openai.api_server ]]; then printf '%s\\n' "${{@:3}}"; exit 0; fi
exec {sys.executable} "$@"
""")
    fake.chmod(0o755)
    return subprocess.run(["bash", str(ROOT / "scripts" / "serve.sh"), "--model", "m", *args], capture_output=True,
                          text=True, env={**os.environ, "PYTHON": str(fake)}, timeout=120)


def flag_values(server_args: list[str]) -> dict[str, str]:
    return {flag: value for flag, value in zip(server_args, server_args[1:], strict=False) if flag.startswith("--")}


@pytest.mark.parametrize(("args", "engine_flags"), [
    ((), {"--mm-processor-kwargs": '{"method":"scc","retention_ratio":0.1}'}),
    (("--method", "evs", "--retention-ratio", "0.25"),
     {"--mm-processor-kwargs": '{"method":"evs","retention_ratio":0.25}'}),
    (("--video-pruning-rate", "0.75"), {"--video-pruning-rate": "0.75", "--video-pruning-method": "evs"}),
    (("--video-pruning-rate=0.5", "--video-pruning-method=vidcom2"),
     {"--video-pruning-rate": "0.5", "--video-pruning-method": "vidcom2"}),
])
def test_serve_script_hands_vllm_one_engine_default(tmp_path, args: tuple[str, ...], engine_flags: dict) -> None:
    result = serve_sh(tmp_path, *args)
    assert result.returncode == 0, result.stderr
    flags = flag_values(result.stdout.splitlines())
    for flag in ("--mm-processor-kwargs", "--video-pruning-rate", "--video-pruning-method"):
        assert flags.get(flag) == engine_flags.get(flag), flag
    assert "--trust-request-mm-kwargs" in result.stdout.splitlines()


@pytest.mark.parametrize(("args", "message"), [
    (("--method", "dycoke"), "'dycoke' cannot be served: its count at a ratio is the nearest"),
    (("--method", "foo"), "must be one of the served methods ['scc', "),
    (("--method", "evs", "--video-pruning-rate", "0.5"), "give --method / --retention-ratio or vLLM's"),
    (("--video-pruning-method", "evs"), "--video-pruning-method needs --video-pruning-rate"),
    (("--video-pruning-rate", "1"), "--video-pruning-rate must be a number in [0, 1) (the fraction pruned), got 1"),
    (("--video-pruning-rate", "0.5", "--video-pruning-method", "scc"), "must be one of ['evs', 'vidcom2']"),
    (("--retention-ratio", "0"), "must be in (0, 1], got 0"),
])
def test_serve_script_rejects_bad_flags_before_starting_vllm(tmp_path, args: tuple[str, ...], message: str) -> None:
    result = serve_sh(tmp_path, *args)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("error: ") and message in result.stderr


def test_budget_module_needs_neither_torch_nor_vllm() -> None:
    """serve.sh checks its flags with it before vLLM's start; importing torch there would cost seconds."""
    code = "import sys, llava.serving.budget; sys.exit(('torch' in sys.modules) + 2 * ('vllm' in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_plugin_registers_ours_and_the_stock_name_only_on_opt_in() -> None:
    assert plugin.architectures_to_register({}) == [plugin.ARCHITECTURE]
    assert plugin.architectures_to_register({plugin.REPLACE_STOCK_ENV: "0"}) == [plugin.ARCHITECTURE]
    assert plugin.architectures_to_register({plugin.REPLACE_STOCK_ENV: "1"}) == [
        plugin.ARCHITECTURE, plugin.STOCK_ARCHITECTURE]
    with pytest.raises(ValueError, match="must be 1 .* or 0, got 'yes'"):
        plugin.architectures_to_register({plugin.REPLACE_STOCK_ENV: "yes"})
    module, name = plugin.MODEL_CLASS.split(":")
    assert module == "llava.serving.vllm_model" and name == plugin.ARCHITECTURE


def test_entry_point_is_declared() -> None:
    from importlib.metadata import entry_points

    points = {p.name: p.value for p in entry_points(group="vllm.general_plugins")}
    assert points.get("llava_scissor") == "llava.serving.plugin:register"


# ---- vLLM-ready tiny checkpoints -------------------------------------------------------------------------------
def test_default_tiny_spec_is_unchanged() -> None:
    spec = TinySpec()
    assert (spec.num_attention_heads, spec.num_key_value_heads, spec.max_position_embeddings) == (4, 2, 4096)


def test_vllm_ready_checkpoint(tmp_path) -> None:
    out = write_tiny_checkpoint(tmp_path, "hf", spec=vllm_spec(), processor_files=True)
    config = json.loads((out / "config.json").read_text())
    text = config["text_config"]
    assert text["hidden_size"] // text["num_attention_heads"] >= 32  # vLLM's CPU attention needs head_dim >= 32
    assert text["max_position_embeddings"] > 6319  # a 32-frame prompt at 384 px
    processor = json.loads((out / "processor_config.json").read_text())
    assert processor["processor_class"] == "LlavaOnevisionProcessor"
    size = config["vision_config"]["image_size"]
    for part in ("image_processor", "video_processor"):
        assert processor[part]["size"] == {"height": size, "width": size}
        assert processor[part]["image_mean"] == processor[part]["image_std"] == [0.5, 0.5, 0.5]


def test_chat_template_renders_our_prompt(tmp_path) -> None:
    from transformers import AutoTokenizer

    out = write_tiny_checkpoint(tmp_path, "hf", spec=vllm_spec(), processor_files=True)
    tokenizer = AutoTokenizer.from_pretrained(str(out))
    template = (out / "chat_template.jinja").read_text()
    messages = [{"role": "user", "content": "<video>\nWhat is moving?"}]  # vLLM's string content format
    served = tokenizer.apply_chat_template(messages, chat_template=template, tokenize=False,
                                           add_generation_prompt=True)
    ours = video_prompt_ids("What is moving?", tokenizer)
    served_ids = tokenizer(served, add_special_tokens=False).input_ids
    video = tokenizer.convert_tokens_to_ids("<video>")
    assert served_ids == [video if i < 0 else i for i in ours.tolist()]  # <image> (-200) where <video> is


def test_processor_files_need_the_hf_format(tmp_path) -> None:
    with pytest.raises(ValueError, match="use format 'hf'"):
        write_tiny_checkpoint(tmp_path, "original", processor_files=True)


def test_command_line_vllm_option(tmp_path) -> None:
    main([str(tmp_path / "a"), "--vllm", "--image-size", "384", "--patch-size", "14"])
    config = json.loads((tmp_path / "a" / "config.json").read_text())
    assert config["vision_config"]["image_size"] == 384 and config["vision_config"]["patch_size"] == 14
    assert (tmp_path / "a" / "processor_config.json").exists()
    with pytest.raises(SystemExit):
        main([str(tmp_path / "b"), "--vllm", "--format", "original"])
    with pytest.raises(SystemExit):
        main([str(tmp_path / "c"), "--image-size", "384"])
