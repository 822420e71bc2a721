"""Fetch exactly the data the grid's lmms-eval tasks read, into HF_HOME, and say how big it is.

The tasks download themselves: building them with lmms-eval's TaskManager runs each task's own `download()`
(annotations through `datasets`, videos by `snapshot_download` into `$HF_HOME/<cache_dir>`, archives unpacked as
lmms-eval unpacks them), so what lands on disk is what the runs read, nothing more. Sizes are measured as the
growth of HF_HOME and of the datasets cache per task.

    HF_HOME=/data/hf python -m llava.eval.data [--models 7b,0.5b] [--tasks mvbench,videomme]
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from llava.eval.paper import PAPER_YAML, load_paper

logger = logging.getLogger(__name__)


def tree_size(path: Path) -> int:
    """Bytes under `path`, following the symlinks lmms-eval creates into the hub cache once."""
    if not path.exists():
        return 0
    total = 0
    for root, _, files in os.walk(path, followlinks=True):
        total += sum((Path(root) / f).stat().st_size for f in files if (Path(root) / f).exists())
    return total


def fetch(task: str) -> None:
    """Build the lmms-eval task, which downloads what it reads (videos and annotations)."""
    from lmms_eval.tasks import TaskManager, get_task_dict

    get_task_dict([task], TaskManager())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="7b,0.5b", help="whose tables' tasks to fetch")
    parser.add_argument("--tasks", default=None, help="comma-separated subset of the grid's tasks")
    parser.add_argument("--paper", type=Path, default=PAPER_YAML)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if "HF_HOME" not in os.environ:
        print("error: export HF_HOME=<data directory> first (lmms-eval's video tasks read videos from there)",
              file=sys.stderr)
        return 2
    paper = load_paper(args.paper)
    tasks = list(dict.fromkeys(t for m in args.models.split(",") for t in paper.tasks_for(m)))
    tasks = [t for t in tasks if args.tasks is None or t in args.tasks.split(",")]
    hf_home = Path(os.environ["HF_HOME"]).expanduser()
    for task in tasks:
        before = tree_size(hf_home)
        fetch(task)
        logger.info("%-18s +%.2f GB (HF_HOME now %.2f GB)", task, (tree_size(hf_home) - before) / 1e9,
                    tree_size(hf_home) / 1e9)
    return 0


if __name__ == "__main__":
    sys.exit(main())
