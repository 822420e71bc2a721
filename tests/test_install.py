"""Every documented install line resolves, with pip's own resolver, to a set of packages the code works with.

Each command is resolved as a new user's pip would resolve it in a fresh venv (`pip install --dry-run --report
--ignore-installed`: registries only, nothing installed), and the resolved versions are checked against the
facts the code depends on (`CONSTRAINTS`). A new upstream release that breaks a documented line then fails here
instead of on a user's machine: lmms-eval 0.7.3 imports `filelock._api`, which filelock 4 removed, and pip
happily resolves filelock 4 for lmms-eval unless something caps it.

The documented lines are `RECIPES`; `test_docs_only_show_resolved_install_lines` keeps README.md and docs/ from
showing a `pip install` command that is not among them. Without network access to the package registries the
resolving tests skip and say so; CI sets LLAVA_REQUIRE_REGISTRY=1 so that they fail there instead.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "checkpoints" / "README.md", *sorted((ROOT / "docs").glob("**/*.md"))]
PYPI = "https://pypi.org/simple/pip/"
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"


@dataclass(frozen=True)
class Recipe:
    """Install commands a user runs in order in one environment, and what the result must satisfy beyond
    `CONSTRAINTS` (`check` receives the resolved {normalised name: version} of all commands together)."""

    commands: tuple[str, ...]
    needs: tuple[str, ...] = ()  # packages the resolved set must contain
    check: Callable[[dict[str, Version]], None] | None = field(default=None, compare=False)


def _no_torchvision(resolved: dict[str, Version]) -> None:
    # PyPI's torchvision wheels pin a CUDA torch build, which replaces a CPU torch the user installed first
    assert "torchvision" not in resolved, "the CPU-torch lmms-eval recipe must not pull torchvision"


def _cpu_build(resolved: dict[str, Version]) -> None:
    assert resolved["torch"].local == "cpu", f"PyTorch's CPU index gave torch {resolved['torch']}, not a +cpu build"


RECIPES: dict[str, Recipe] = {
    "package": Recipe(("pip install -e .",), needs=("torch", "transformers", "av", "safetensors")),
    "torch-cpu": Recipe((f"pip install torch --index-url {TORCH_CPU_INDEX}",), needs=("torch",), check=_cpu_build),
    "eval": Recipe(('pip install -e ".[eval]"',), needs=("lmms-eval", "filelock", "torch")),
    "eval-cpu-torch": Recipe(("pip install --no-deps lmms-eval==0.7.3", 'pip install -e ".[lmms-eval-nodeps]"'),
                             needs=("lmms-eval", "filelock", "datasets", "loguru"), check=_no_torchvision),
    "serve": Recipe(('pip install -e ".[serve]"',), needs=("vllm", "transformers")),
    "test": Recipe(('pip install -e ".[test,demo]"',), needs=("pytest", "scipy", "ruff", "selenium", "gradio")),
    "demo": Recipe(('pip install -e ".[demo]"',), needs=("gradio",)),
}

# What the code needs of a package whenever a resolved set contains it, with the reason.
CONSTRAINTS: dict[str, tuple[str, str]] = {
    "filelock": ("filelock<4", "lmms-eval 0.7.3 imports filelock._api (gone in filelock 4) whenever it is present"),
    "lmms-eval": ("lmms-eval==0.7.3", "the drop-in and llava_scissor tests run against lmms-eval 0.7.3"),
    "transformers": ("transformers>=5.6", "llava.model builds on transformers 5's Qwen2 / SigLIP modules"),
    "torch": ("torch>=2.4", "the compressor's fp32_precision switch and sdpa kernels"),
    "vllm": ("vllm>=0.32,<0.34", "llava.serving overrides private vLLM methods checked on 0.32-0.33"),
}
CONSTRAINT_APPLIES = {"filelock": "lmms-eval"}  # filelock's cap matters only where lmms-eval is installed


def _name(raw: str) -> str:
    return re.sub(r"[-_.]+", "-", raw).lower()


@cache
def _reachable(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=15):
            return True
    except (urllib.error.URLError, OSError):
        return False


def _need_registry(url: str) -> None:
    if _reachable(url):
        return
    message = f"{url} is unreachable from this machine, so pip's resolver cannot be asked"
    if os.environ.get("LLAVA_REQUIRE_REGISTRY") == "1" and url == PYPI:
        pytest.fail(message + " (LLAVA_REQUIRE_REGISTRY=1: CI must reach PyPI)")
    pytest.skip(message)


def _resolve(command: str) -> dict[str, Version]:
    """Resolve one documented `pip install ...` command as a fresh environment would: {name: version}."""
    args = shlex.split(command)
    assert args[:2] == ["pip", "install"], command
    report = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--ignore-installed",
         "--disable-pip-version-check", "--report", "-", *args[2:]],
        cwd=ROOT, capture_output=True, text=True, timeout=900, check=False)
    if report.returncode != 0:
        raise AssertionError(f"`{command}` does not resolve:\n{report.stderr[-4000:]}")
    installs = json.loads(report.stdout)["install"]
    return {_name(item["metadata"]["name"]): Version(item["metadata"]["version"]) for item in installs}


@pytest.fixture(scope="module")
def resolved() -> dict[str, dict[str, Version] | BaseException]:
    """Every command of every recipe resolved once, in parallel (each is a network-bound pip run)."""
    _need_registry(PYPI)
    commands = sorted({c for recipe in RECIPES.values() for c in recipe.commands
                       if TORCH_CPU_INDEX not in c or _reachable(TORCH_CPU_INDEX + "/torch/")})

    def attempt(command: str) -> dict[str, Version] | BaseException:
        try:
            return _resolve(command)
        except (AssertionError, subprocess.TimeoutExpired) as err:
            return err

    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(zip(commands, pool.map(attempt, commands), strict=True))


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_documented_install_line_resolves_to_a_working_set(name: str, resolved: dict) -> None:
    recipe = RECIPES[name]
    if any(TORCH_CPU_INDEX in c for c in recipe.commands):
        _need_registry(TORCH_CPU_INDEX + "/torch/")
    together: dict[str, Version] = {}
    for command in recipe.commands:
        outcome = resolved[command]
        if isinstance(outcome, BaseException):
            raise outcome
        together.update(outcome)
    missing = [_name(p) for p in recipe.needs if _name(p) not in together]
    assert not missing, f"{recipe.commands} resolves without {missing}"
    broken = []
    for package, (spec, reason) in CONSTRAINTS.items():
        trigger = CONSTRAINT_APPLIES.get(package, package)
        if package in together and trigger in together and together[package] not in Requirement(spec).specifier:
            broken.append(f"{package} {together[package]} violates {spec}: {reason}")
    assert not broken, f"{recipe.commands}:\n" + "\n".join(broken)
    if recipe.check is not None:
        recipe.check(together)


def _documented_commands(text: str) -> list[str]:
    """`pip install ...` commands shown in Markdown: up to a closing backtick, `&&`, a comment or the line end."""
    found = re.findall(r"pip install [^`\n#;&|)]*", text)
    return [" ".join(c.split()) for c in found]


def test_docs_only_show_resolved_install_lines() -> None:
    known = {c for recipe in RECIPES.values() for c in recipe.commands}
    shown = {(path.relative_to(ROOT).as_posix(), c) for path in DOCS for c in _documented_commands(path.read_text())}
    assert shown, "no install line found in README.md or docs/"
    unknown = sorted(f"{where}: {command}" for where, command in shown if command not in known)
    assert not unknown, "install lines in the docs that tests/test_install.py does not resolve (add them to " \
                        "RECIPES or use a documented one):\n" + "\n".join(unknown)


def test_extracts_commands_from_markdown() -> None:
    text = ('Run `pip install -e ".[eval]"` then\n```bash\npip install --no-deps lmms-eval==0.7.3 && '
            'pip install -e ".[lmms-eval-nodeps]"   # CPU torch\n```\n')
    assert _documented_commands(text) == ['pip install -e ".[eval]"', "pip install --no-deps lmms-eval==0.7.3",
                                          'pip install -e ".[lmms-eval-nodeps]"']
