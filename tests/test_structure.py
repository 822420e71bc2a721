"""The package's shape, enforced: which layer may import which, and how long and deep a function may grow.

Read from the source with `ast` (nothing is imported), so a violation names the file, the line and the rule.
Dependencies point one way (video -> frames -> features -> compressed tokens -> LLM, with the callers on top):
  - `llava.config_types` (the torch-free choices and the compression config, so flags validate before torch
    loads) imports only the standard library;
  - `llava.compression` is a pure-torch library: the standard library, torch, itself and `llava.config_types`;
  - `llava.video` decodes files and knows nothing of models or compression;
  - `llava.model` may use compression, never evaluation, serving, the runtime or the CLI;
  - the runtime (`llava.runtime`) and evaluation never import the CLI (`llava.infer`), which only parses flags.
Functions stay short and flat (the habits of nanoGPT / gpt-fast / transformers' modeling files): at most
`MAX_LINES` statement lines after the docstring and `MAX_DEPTH` nested blocks (if / for / while / with / try /
match; nested functions and classes are measured on their own); the model, compression and video code, the
hot paths, stay at `MAX_DEPTH_CORE`.
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "llava"
MAX_LINES = 60
MAX_DEPTH = 4
MAX_DEPTH_CORE = 3
CORE = ("llava/compression/", "llava/model/", "llava/video.py")
BLOCKS = (ast.If, ast.For, ast.AsyncFor, ast.While, ast.With, ast.AsyncWith, ast.Try, ast.Match)
SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)

# module prefix -> the llava modules it must not import (prefix match); compression gets a stricter rule below
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "llava.video": ("llava.model", "llava.compression", "llava.eval", "llava.serving", "llava.runtime",
                    "llava.infer"),
    "llava.model": ("llava.eval", "llava.serving", "llava.runtime", "llava.infer", "llava.testing"),
    "llava.runtime": ("llava.infer", "llava.eval", "llava.serving", "llava.testing"),
    "llava.eval": ("llava.infer",),
    "llava.serving": ("llava.infer", "llava.eval"),
}


def _modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        out.append((".".join(parts[:-1] if parts[-1] == "__init__" else parts), path))
    return out


def _imports(name: str, path: Path) -> list[tuple[int, str]]:
    """Every module a file imports (top level or inside functions), relative imports made absolute."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.append((node.lineno, base))
    return found


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def _outside(owner: str, allowed: tuple[str, ...]) -> list[str]:
    """Imports of `owner`'s modules that are neither the standard library nor under an `allowed` prefix."""
    bad = []
    for name, path in _modules():
        if not _within(name, owner):
            continue
        bad += [f"{path.relative_to(ROOT)}:{line} imports {module}" for line, module in _imports(name, path)
                if module.split(".")[0] not in sys.stdlib_module_names and module != "__future__"
                and not any(_within(module, a) for a in allowed)]
    return bad


def test_compression_imports_only_the_standard_library_torch_and_itself() -> None:
    bad = _outside("llava.compression", ("torch", "llava.compression", "llava.config_types"))
    assert not bad, "llava.compression must import only the standard library, torch, itself and " \
                    "llava.config_types:\n" + "\n".join(bad)


def test_config_types_import_only_the_standard_library() -> None:
    bad = _outside("llava.config_types", ())
    assert not bad, "llava.config_types must stay torch-free (flags validate before torch loads):\n" + "\n".join(bad)


def test_imports_point_one_way() -> None:
    bad = []
    for name, path in _modules():
        for owner, banned in FORBIDDEN.items():
            if not _within(name, owner):
                continue
            bad += [f"{path.relative_to(ROOT)}:{line} ({owner}) imports {module}"
                    for line, module in _imports(name, path) if any(_within(module, b) for b in banned)]
    assert not bad, "imports against the layer order:\n" + "\n".join(bad)


def _depth(node: ast.AST, level: int = 0) -> int:
    deepest = level
    for child in ast.iter_child_nodes(node):
        if isinstance(child, SCOPES):
            continue
        deepest = max(deepest, _depth(child, level + isinstance(child, BLOCKS)))
    return deepest


def _length(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    body = fn.body
    if isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value,
                                                                                                  str):
        body = body[1:]
    return body[-1].end_lineno - body[0].lineno + 1 if body else 0


def _functions(root: Path) -> list[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    out = []
    for path in sorted(root.rglob("*.py")):
        where = path.relative_to(ROOT).as_posix()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                out.append((f"{where}:{node.lineno} {node.name}", node))
    return out


@pytest.mark.parametrize("root", ["llava", "benchmarks"])
def test_functions_are_short_and_flat(root: str) -> None:
    bad = []
    for where, fn in _functions(ROOT / root):
        limit = MAX_DEPTH_CORE if where.startswith(CORE) else MAX_DEPTH
        if _length(fn) > MAX_LINES:
            bad.append(f"{where}: {_length(fn)} lines (at most {MAX_LINES})")
        if _depth(fn) > limit:
            bad.append(f"{where}: nesting {_depth(fn)} (at most {limit})")
    assert not bad, "split these functions:\n" + "\n".join(bad)


def test_the_checks_see_violations() -> None:
    """The measures themselves, on code written to break each rule."""
    deep = "def f(x):\n" + "".join("    " * (i + 1) + f"if x > {i}:\n" for i in range(5)) + "    " * 6 + "pass\n"
    long = "def g():\n    '''doc'''\n" + "    x = 1\n" * 61
    fn_deep, fn_long = (ast.parse(src).body[0] for src in (deep, long))
    assert _depth(fn_deep) == 5 and _length(fn_long) == 61
    nested = ast.parse("def h():\n    def inner():\n        if a:\n            if b:\n                pass\n").body[0]
    assert _depth(nested) == 0  # the inner function is measured on its own
    path = ROOT / "llava" / "compression" / "scc.py"
    assert any(module == "llava.compression.graph" for _, module in _imports("llava.compression.scc", path))
