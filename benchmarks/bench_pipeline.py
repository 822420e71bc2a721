"""End-to-end speed and memory of the video pipeline at the real 0.5B / 7B shapes, per stage: the script.

The measuring is `llava.testing.pipeline_bench` (stages, memory, counts) and `llava.testing.methods_bench` (methods
side by side, the paper's Table 5); their docstrings explain the tables, `--help` lists every flag. Each table is
printed and written to its own stamped file under benchmarks/results/.

Run (CPU): python benchmarks/bench_pipeline.py
GPU: python benchmarks/bench_pipeline.py --device cuda --dtype bfloat16 --full-depth
One section: python benchmarks/bench_pipeline.py --sections methods --archs 0.5b
"""
from __future__ import annotations

from functools import partial

from llava.testing import methods_bench, pipeline_bench


def main() -> None:
    cfg, results_dir = pipeline_bench.parse_args()
    for run in (pipeline_bench.run, methods_bench.run):
        for path in run(cfg, results_dir, echo=partial(print, flush=True)):
            print(f"wrote {path}")


if __name__ == "__main__":
    main()
