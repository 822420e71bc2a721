"""A tiny local lmms-eval task built on the installed Video-MME task, for offline smoke runs and tests.

The task YAML `include:`s lmms-eval's own `videomme.yaml` (prompt, answer parsing, metric stay lmms-eval's) and
only swaps the dataset for a local JSONL and generated videos. Video-MME's `doc_to_visual` reads videos from
`$HF_HOME/videomme/data/<videoID>.mp4`, so they are written there, and lmms-eval skips its download because that
directory exists. Several questions per video, as in Video-MME, so the compress-once cache has work to do.

    python -m llava.testing.tiny_task OUT [--name tiny_videomme] [--videos 2] [--questions 2]
    export HF_HOME=OUT/hf_home   # then: python -m lmms_eval --include_path OUT/tasks --tasks tiny_videomme ...
"""
from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from llava.demo_clip import make_demo_clip

logger = logging.getLogger(__name__)

LETTERS = "ABCD"


@dataclass(frozen=True)
class TinyTask:
    name: str
    include_path: Path  # pass as lmms-eval's --include_path
    hf_home: Path  # export as HF_HOME before lmms-eval imports its Video-MME utils
    videos: list[Path]
    docs: int


def _installed_videomme_yaml() -> Path:
    import lmms_eval

    path = Path(lmms_eval.__file__).parent / "tasks" / "videomme" / "videomme.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"lmms-eval's Video-MME task YAML is not at {path}; install lmms-eval 0.7.x")
    return path


def _doc(video_id: str, n: int, q: int) -> dict:
    """A Video-MME document (the fields its utils read), with a deterministic answer."""
    return {
        "video_id": video_id, "videoID": video_id, "question_id": f"{video_id}-{q}", "duration": "short",
        "domain": "Knowledge", "sub_category": "Humanity & History", "task_type": "Counting Problem",
        "question": f"Question {q} about clip {n}: which option is right?",
        "options": [f"{letter}. option {letter.lower()}{q}" for letter in LETTERS],
        "answer": LETTERS[(n + q) % len(LETTERS)],
    }


def write_tiny_task(out: str | Path, name: str = "tiny_videomme", videos: int = 2, questions: int = 2) -> TinyTask:
    """Write videos (different sizes and lengths, so retention differs), docs and the task YAML under `out`."""
    out = Path(out).resolve()
    hf_home, tasks = out / "hf_home", out / "tasks"
    data = hf_home / "videomme" / "data"
    tasks.mkdir(parents=True, exist_ok=True)
    paths, docs = [], []
    for n in range(videos):
        video_id = f"{name}_{n}"
        paths.append(make_demo_clip(data / f"{video_id}.mp4", num_frames=12 + 6 * n,
                                    size=(64 + 16 * n, 48 + 8 * n), fps=8))
        docs.extend(_doc(video_id, n, q) for q in range(questions))
    jsonl = tasks / f"{name}.jsonl"
    jsonl.write_text("".join(json.dumps(d) + "\n" for d in docs))
    yaml_text = (f"include: {_installed_videomme_yaml()}\ntask: {name}\ndataset_path: json\n"
                 f"dataset_kwargs:\n  data_files:\n    test: {jsonl}\n  video: true\n  cache_dir: videomme\n")
    (tasks / f"{name}.yaml").write_text(yaml_text)
    return TinyTask(name, tasks, hf_home, paths, len(docs))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--name", default="tiny_videomme")
    parser.add_argument("--videos", type=int, default=2)
    parser.add_argument("--questions", type=int, default=2)
    args = parser.parse_args(argv)
    task = write_tiny_task(args.out, args.name, args.videos, args.questions)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logger.info("task %s: %d docs on %d videos; export HF_HOME=%s; lmms-eval --include_path %s", task.name,
                task.docs, len(task.videos), task.hf_home, task.include_path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
