#!/usr/bin/env bash
# The checks that need a CUDA GPU, in one call on one GPU in under 8 minutes (440 s of step budgets, plus the
# CUDA probe and each step's kill grace):
#   1. tests that run on CUDA or only where it exists (compression on the GPU against the CPU, the TF32 guard,
#      the slow golden checks, which skip without real checkpoints);
#   2. the compression benchmark in bf16 at D 896 and 3584;
#   3. the pipeline benchmark in bf16 at the real 0.5B depth: stages, memory against frames, op counts;
#   4. the pipeline benchmark in bf16 at the real 7B depth: stages and op counts;
#   5. every compression method side by side in bf16 at the real 0.5B depth, and the paper's Table 5.
# Benchmark tables go to benchmarks/results/ with the GPU's name in their file names (llava.testing.results).
# Each step has its own time limit; a step that fails or runs out of time is reported and the next one runs.
#
# Usage: bash scripts/gpu_check.sh [--dry-run]     (--dry-run prints the plan and runs nothing)
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # this checkout's llava, installed or not

names=(tests compression-bf16 pipeline-0.5b-bf16 pipeline-7b-bf16 methods-0.5b-bf16)
budgets=(90 70 110 110 60)  # seconds per step
commands=(
  "python -m pytest -q -rs -m 'slow or not slow' tests/test_compression.py tests/test_compression_precision.py tests/test_model_reference.py"
  "python benchmarks/bench_compression.py --device cuda --dtype bfloat16 --repeats 5"
  "python benchmarks/bench_pipeline.py --device cuda --dtype bfloat16 --full-depth --archs 0.5b --memory-arch 0.5b --sections stages memory counts --repeats 3"
  "python benchmarks/bench_pipeline.py --device cuda --dtype bfloat16 --full-depth --archs 7b --sections stages counts --repeats 3"
  "python benchmarks/bench_pipeline.py --device cuda --dtype bfloat16 --full-depth --archs 0.5b --sections methods table5 --repeats 1"
)
probe_budget=15
kill_grace=3

case "${1:-}" in
  "") dry_run=0 ;;
  --dry-run) dry_run=1 ;;
  *) echo "usage: bash scripts/gpu_check.sh [--dry-run]" >&2; exit 2 ;;
esac

total=$probe_budget
for budget in "${budgets[@]}"; do total=$((total + budget + kill_grace)); done
echo "gpu_check plan: ${#names[@]} steps, at most ${total} s (CUDA probe ${probe_budget} s, ${kill_grace} s kill grace per step)"
for i in "${!names[@]}"; do
  echo "[$((i + 1))/${#names[@]}] ${names[$i]} (budget ${budgets[$i]} s): ${commands[$i]}"
done
if [[ $dry_run == 1 ]]; then
  exit 0
fi

if ! timeout "$probe_budget" python -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "gpu_check: no CUDA GPU visible (torch.cuda.is_available() is False, or torch did not import): nothing run" >&2
  exit 3
fi
python -c "import torch; print('GPU:', torch.cuda.get_device_name(0), '| torch', torch.__version__)"

failed=()
for i in "${!names[@]}"; do
  echo
  echo "=== [$((i + 1))/${#names[@]}] ${names[$i]} (budget ${budgets[$i]} s): ${commands[$i]}"
  start=$SECONDS
  timeout --kill-after="$kill_grace" "${budgets[$i]}" bash -c "${commands[$i]}"
  rc=$?
  elapsed=$((SECONDS - start))
  if [[ $rc == 124 || $rc == 137 ]]; then
    echo "=== ${names[$i]}: OUT OF TIME after ${elapsed} s"
    failed+=("${names[$i]} (timed out)")
  elif [[ $rc != 0 ]]; then
    echo "=== ${names[$i]}: FAILED (exit ${rc}) after ${elapsed} s"
    failed+=("${names[$i]} (exit ${rc})")
  else
    echo "=== ${names[$i]}: ok in ${elapsed} s"
  fi
done

echo
if [[ ${#failed[@]} -gt 0 ]]; then
  echo "gpu_check: ${#failed[@]} of ${#names[@]} steps failed: ${failed[*]}" >&2
  exit 1
fi
echo "gpu_check: all ${#names[@]} steps passed; tables under benchmarks/results/"
