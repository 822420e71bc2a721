#!/usr/bin/env bash
# One lmms-eval run of the llava_scissor model: one checkpoint or run config, one task, one budget.
#   bash scripts/eval.sh --task mvbench --pretrained CKPT [--retention-ratio 0.1 | --tau 0.9 | --method none]
#       [--config configs/scissor-baseline-7b.yaml] [--frames 32] [--batch-size 1] [--out results/one]
#       [--model-args dtype=float16,epsilon=0.05] [--launcher "accelerate launch --num_processes 8"]
#       [-- extra lmms-eval flags, e.g. --limit 8 --include_path DIR]
# Per-sample compression stats go to OUT/samples/rank*.jsonl. lmms-eval exits 0 even when a task fails, so the
# results JSON is checked afterwards: missing or incomplete -> exit code 1 naming what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
task="" out="" launcher="" batch=1 args=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --task) task="$2"; shift 2 ;;
    --pretrained) args+=("pretrained=$2"); shift 2 ;;
    --config) args+=("config=$2"); shift 2 ;;
    --retention-ratio) args+=("retention_ratio=$2"); shift 2 ;;
    --tau) args+=("tau=$2"); shift 2 ;;
    --method) args+=("method=$2"); shift 2 ;;
    --frames) args+=("max_frames_num=$2"); shift 2 ;;
    --model-args) args+=("$2"); shift 2 ;;
    --batch-size) batch="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --launcher) launcher="$2"; shift 2 ;;
    --) shift; break ;;
    *) echo "error: unknown flag $1 (see the header of $0)" >&2; exit 2 ;;
  esac
done
[[ -n "$task" ]] || { echo "error: --task is required" >&2; exit 2; }
out="${out:-results/single/$task}"
args+=("log_dir=$out/samples")
model_args="$(IFS=,; echo "${args[*]}")"
read -r -a runner <<< "${launcher:-python}"
"${runner[@]}" -m lmms_eval --model llava_scissor --model_args "$model_args" --tasks "$task" \
  --batch_size "$batch" --output_path "$out" --log_samples "$@" || echo "lmms-eval exited with $?" >&2
python -m llava.eval.results "$out" --task "$task"
