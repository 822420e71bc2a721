"""The documentation stays true: its Python examples run as printed (on a tiny checkpoint instead of the hub id,
offline), every relative link in README.md and docs/*.md points to a file (and heading) that exists, and every repo
path and `llava.*` name the pages mention exists."""
from __future__ import annotations

import importlib
import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted([ROOT / "README.md", ROOT / "checkpoints" / "README.md", *(ROOT / "docs").glob("*.md")])
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
REPO_PATH = re.compile(r"(?<![\w./$-])((?:llava|scripts|tests|benchmarks|configs|assets|checkpoints|docs)/[\w./-]*)")
FILE_SUFFIXES = {".py", ".sh", ".md", ".yaml", ".yml", ".mp4", ".toml", ".json", ".txt"}
DOTTED = re.compile(r"(?<![\w.])llava(?:\.[A-Za-z_]\w*)+")


def page_id(page: Path) -> str:
    return str(page.relative_to(ROOT))


def python_blocks(page: str, after_heading: str) -> list[str]:
    text = (ROOT / page).read_text()
    assert after_heading in text, f"{page} has no heading {after_heading!r}"
    section = text.split(after_heading, 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert blocks, f"no python block after {after_heading!r} in {page}"
    return blocks


def test_model_examples_answer_on_a_tiny_checkpoint(tiny_original_dir: Path, capsys: pytest.CaptureFixture) -> None:
    load = python_blocks("docs/model.md", "## Answer a question in Python")[0]
    reuse = python_blocks("docs/model.md", "## Compress once, ask many times")[0]
    assert "lmms-lab/llava-onevision-qwen2-0.5b-ov" in load
    load = load.replace('"lmms-lab/llava-onevision-qwen2-0.5b-ov"', repr(str(tiny_original_dir)))
    load = load.replace('"assets/demo.mp4"', repr(str(ROOT / "assets" / "demo.mp4")))
    namespace: dict = {}
    exec(compile(load, "docs/model.md", "exec"), namespace)
    assert capsys.readouterr().out.strip()  # the decoded answer (noise from random weights, but printed)
    exec(compile(reuse, "docs/model.md", "exec"), namespace)
    out = capsys.readouterr().out
    frames, per_frame = namespace["pixels"].shape[0], 16  # the tiny tower pools to 4 x 4 tokens per frame
    assert out.startswith(f"{max(1, round(0.05 * frames * per_frame))} visual tokens\n")
    positions = [out.find(f"\n{q} ") for q in ("What is moving?", "What colour is the background?",
                                               "How many objects are there?")]
    assert -1 not in positions and positions == sorted(positions)  # each question printed with its answer


def test_compression_example_runs_and_keeps_what_it_says() -> None:
    namespace: dict = {}
    exec(compile(python_blocks("docs/compression.md", "## Usage")[0], "docs/compression.md", "exec"), namespace)
    assert tuple(namespace["result"].tokens.shape) == (627, 896)


def anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped except '-' and '_', spaces to '-'."""
    headings = re.findall(r"^#{1,6}\s+(.+?)\s*$", FENCE.sub("", page.read_text()), re.M)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_relative_links_point_to_files_that_exist(page: Path) -> None:
    text = FENCE.sub("", page.read_text())
    problems = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.is_relative_to(ROOT):
            problems.append(f"{target}: outside the repository")
        elif not resolved.exists():
            problems.append(f"{target}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            problems.append(f"{target}: no heading #{anchor} in {resolved.relative_to(ROOT)}")
    assert not problems, f"{page_id(page)}: " + "; ".join(problems)


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_repo_paths_mentioned_exist(page: Path) -> None:
    text = page.read_text()
    missing = []
    for match in REPO_PATH.finditer(text):
        path = match.group(1).rstrip(".")
        if text[match.end():match.end() + 1] in "{<*":  # a pattern (`configs/llava-ov-{0.5b,7b}.yaml`), not a path
            continue
        if (path.endswith("/") or Path(path).suffix in FILE_SUFFIXES) and not (ROOT / path).exists():
            missing.append(path)
    assert not missing, f"{page_id(page)} mentions paths that do not exist: {sorted(set(missing))}"


def names_exist(dotted: str) -> bool:
    """`llava.a.b.c`: the longest prefix that is a module exists, and the rest are attributes of it."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        module = ".".join(parts[:cut])
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        if found:
            break
    if cut == len(parts):
        return True
    try:
        obj = importlib.import_module(module)
    except ImportError:  # an optional dependency (vLLM, lmms-eval) is missing here: the module itself exists
        return True
    for name in parts[cut:]:
        if not hasattr(obj, name):
            return False
        obj = getattr(obj, name)
    return True


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_llava_names_mentioned_exist(page: Path) -> None:
    names = {name.rstrip(".") for name in DOTTED.findall(page.read_text())}
    missing = sorted(name for name in names if not names_exist(name))
    assert not missing, f"{page_id(page)} mentions llava names that do not exist: {missing}"
