"""FastV's prefill memory against the uncompressed model, SCC and an eager-attention FastV: the script.

The measuring is `llava.testing.fastv_memory`; its docstring explains the variants and the columns, `--help` lists
every flag. The table is printed and written to benchmarks/results/fastv-memory-<arch>-<dtype>-<device>.md.

Run (CPU): python benchmarks/bench_fastv_memory.py
GPU: python benchmarks/bench_fastv_memory.py --device cuda --dtype bfloat16 --text-layers 24
"""
from __future__ import annotations

from functools import partial

from llava.testing import fastv_memory


def main() -> None:
    cfg, results_dir = fastv_memory.parse_args()
    print(f"wrote {fastv_memory.run(cfg, results_dir, echo=partial(print, flush=True))}")


if __name__ == "__main__":
    main()
