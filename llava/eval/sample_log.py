"""Per-sample log of the lmms-eval model, one JSON line per answered request, one file per rank.

Two jobs: results can be analysed by retention (tokens in / out, thresholds, compression and prefill time per
sample), and a killed run resumes without recomputing answered samples: lmms-eval's response cache stores
answers only after the model returns its whole request list, so answers are recorded here as each batch
finishes and read back on restart. A record is reused only when its `request_key` matches: the same task,
document, prompt, generation settings and model settings (checkpoint, frames, compression).
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def request_key(settings: str, task: str, doc_id: int, context: str, gen_kwargs: dict[str, Any]) -> str:
    """A stable id for one request under one model setting (`settings`: the run's canonical description)."""
    text = json.dumps([settings, task, doc_id, context, sorted((k, repr(v)) for k, v in gen_kwargs.items())])
    return hashlib.sha256(text.encode()).hexdigest()


class SampleLog:
    """Appends records to `<log_dir>/rank<r>.jsonl` and knows the answers of every rank's earlier records."""

    def __init__(self, log_dir: str | Path | None, rank: int) -> None:
        self.path = None if log_dir is None else Path(log_dir) / f"rank{rank}.jsonl"
        self.answers: dict[str, str] = {}
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            for log in sorted(self.path.parent.glob("rank*.jsonl")):
                self._read(log)

    def _read(self, log: Path) -> None:
        lines = log.read_text().splitlines()
        for number, line in enumerate(lines, 1):
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                if number == len(lines):  # a run killed mid-write leaves at most one torn last line
                    logger.warning("%s: ignoring a torn last line", log)
                    continue
                raise ValueError(f"{log}:{number} is not JSON; the per-sample log is corrupt") from None
            self.answers[record["request_key"]] = record["answer"]

    def write(self, record: dict[str, Any]) -> None:
        logger.info("sample %s/%s: %s -> %s tokens, compression %.1f ms, prefill %.1f ms%s", record["task"],
                    record["doc_id"], record["tokens_in"], record["tokens_out"], record["compression_ms"],
                    record["prefill_ms"], " (cached block)" if record["cache_hit"] else "")
        if self.path is None:
            return
        with self.path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
            handle.flush()
