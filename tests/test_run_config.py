"""Run configs: every shipped YAML validates; unknown keys and bad values fail with the field's name;
dotted overrides switch the budget mode."""
from __future__ import annotations

from pathlib import Path

import pytest

from llava.run_config import RunConfig, config_to_dict, load_config

CONFIGS = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))


def test_shipped_configs_exist_for_both_sizes_and_modes() -> None:
    names = {p.stem for p in CONFIGS}
    assert {"llava-ov-0.5b", "llava-ov-7b", "llava-ov-0.5b-scissor", "llava-ov-7b-scissor"} <= names
    assert {"scissor-baseline-0.5b", "scissor-baseline-7b", "scissor-baseline-7b-tau"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_shipped_config_validates(path: Path) -> None:
    config = load_config(path)
    assert isinstance(config, RunConfig)
    assert config.compression is not None
    assert config.video.frames == 32


def test_defaults_without_file() -> None:
    config = load_config(None)
    assert config.compression is None and config.video.frames == 32 and config.generation.temperature == 0.0


@pytest.mark.parametrize(
    "text,message",
    [
        ("model:\n  pth: x\n", r"unknown key\(s\) \['pth'\] in config section 'model'"),
        ("modle:\n  path: x\n", r"unknown config section\(s\) \['modle'\]"),
        ("video:\n  frames: 0\n", "video.frames must be an int"),
        ("video:\n  backend: opencv\n", r"video.backend must be one of \['auto', 'decord', 'pyav'\]"),
        ("model:\n  dtype: fp8\n", "model.dtype must be one of"),
        ("compression:\n  method: scc\n", "exactly one of tau"),
        ("compression:\n  method: scc\n  tau: 2\n", "tau must be in"),
        ("compression:\n  method: scc\n  retention_ratio: 1.5\n", "retention_ratio must be in"),
        ("generation:\n  temperature: -1\n", "generation.temperature"),
        ("- a\n- b\n", "must hold a mapping"),
    ],
)
def test_bad_config_names_the_field(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        load_config(path)


def test_missing_config_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_config(tmp_path / "nope.yaml")


def test_overrides_switch_budget_mode() -> None:
    ratio_config = CONFIGS[0].parent / "llava-ov-7b-scissor.yaml"
    config = load_config(ratio_config, {"compression.tau": 0.9, "video.frames": 16})
    assert config.compression.tau == 0.9 and config.compression.retention_ratio is None
    assert config.video.frames == 16
    config = load_config(CONFIGS[0].parent / "scissor-baseline-7b-tau.yaml", {"compression.retention_ratio": 0.05})
    assert config.compression.retention_ratio == 0.05 and config.compression.tau is None
    baseline = CONFIGS[0].parent / "llava-ov-0.5b.yaml"
    assert load_config(baseline, {"compression.retention_ratio": 0.1}).compression.method == "scc"


def test_bad_override_is_named() -> None:
    with pytest.raises(ValueError, match="section.key"):
        load_config(None, {"frames": 3})
    with pytest.raises(ValueError, match="unknown key"):
        load_config(None, {"video.fps": 3})


def test_config_round_trips_to_plain_data() -> None:
    config = load_config(CONFIGS[0])
    data = config_to_dict(config)
    assert data["model"]["path"] == config.model.path


def test_a_budget_override_clears_every_other_budget_key(tmp_path) -> None:
    """A YAML budget of one kind and a flag of another switch modes instead of failing on two budgets."""
    path = tmp_path / "run.yaml"
    path.write_text("compression: {method: dycoke, dycoke_k: 0.9}\n")
    switched = load_config(path, {"compression.retention_ratio": 0.35})
    assert (switched.compression.method, switched.compression.dycoke_k, switched.compression.retention_ratio) == \
        ("dycoke", None, 0.35)
    path.write_text("compression: {method: scc, tau: 0.9}\n")
    knob = load_config(path, {"compression.pool_shape": [16, 8, 8]})  # a method's own budget knob names it
    assert (knob.compression.method, knob.compression.tau, knob.compression.pool_shape) == ("pllava", None, (16, 8, 8))
    with pytest.raises(ValueError, match="dycoke_k is a knob of method 'dycoke'"):
        load_config(path, {"compression.dycoke_k": 0.9, "compression.method": "scc"})  # the method, given last, decides
    off = load_config(path, {"compression.tau": None, "compression.method": "none"})
    assert off.compression.method == "none" and off.compression.tau is None
