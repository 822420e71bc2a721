"""Fixtures and instruments for the tests and benchmarks, importable without path tricks (CPU, no downloads).

- `tiny_checkpoint`: tiny random checkpoints in the original and llava-hf formats (and vLLM-ready ones).
- `tiny_task`: a tiny local lmms-eval multiple-choice task on lmms-eval's own Video-MME task.
- `architectures`: random-weight models at the real 0.5B / 7B shapes (and a tiny one), depth reducible.
- `synthetic`: video features with persistent regions, an H.264 clip, prompt ids around the video placeholder.
- `instruments`: module-span clocks on the package's one device-synced clock, peak memory of a phase, FLOPs.
- `counting`: dispatched ops and host round trips of a call, countable on any device.
- `results`: stamped Markdown result files under benchmarks/results/.
- `pipeline_bench`: the end-to-end pipeline benchmark's measuring (benchmarks/bench_pipeline.py is its script).
- `methods_bench`: that script's methods-side-by-side and Table 5 sections.
"""
