#!/usr/bin/env bash
# Fetch the videos and annotations of the paper grid's lmms-eval tasks into HF_HOME, with sizes per task.
#   export HF_HOME=/data/hf            # where lmms-eval reads videos: $HF_HOME/<task cache_dir>/...
#   export HF_TOKEN=hf_...             # several datasets (MVBench, Video-MME, ...) are gated on the hub
#   bash scripts/prepare_data.sh [--models 7b,0.5b] [--tasks mvbench,videomme]
# Offline use: copy an existing HF_HOME (videos under $HF_HOME/<cache_dir>, the datasets / hub caches) to the
# machine, export the same HF_HOME plus HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1; lmms-eval skips a task's video
# download when $HF_HOME/<cache_dir> exists as a real directory.
set -euo pipefail
cd "$(dirname "$0")/.."
exec python -m llava.eval.data "$@"
