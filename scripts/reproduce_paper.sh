#!/usr/bin/env bash
# The paper's grid in one command, then the report against the published numbers.
#   bash scripts/reproduce_paper.sh --pretrained 7b=CKPT_7B --pretrained 0.5b=CKPT_05B [--dry-run]
#       [--models 7b] [--modes paper,exact,dycoke,pllava,visionzip] [--ratios 0.35,0.1] [--tasks mvbench]
#       [--results results] [--launcher "accelerate launch --num_processes 8"] [--batch-size 4]
#       [--model-args dtype=float16]
# 7B: Tables 1-3 at 100/50/35/25/20/10/7/5%; 0.5B: Table 7 at 100/50/35/10/7/5%; 32 frames; plus the comparison
# methods where Tables 1-3 print them (DyCoke 50/35% by dycoke_k 0.7/0.9, PLLaVA and VisionZip 50/35/10% by
# retention_ratio; MVBench at 35/10% only). Each cell is one lmms-eval run under
# results/<model>/<mode>/<ratio>/<task>/, <mode> = baseline (100%), paper / exact (SCC) or the method's name.
# Rerunning skips finished cells and resumes a killed one; a cell whose results JSON is missing or incomplete
# stops the grid with a non-zero exit code.
# Data: bash scripts/prepare_data.sh first (HF_HOME). Flags: python -m llava.eval.grid --help.
set -euo pipefail
cd "$(dirname "$0")/.."
exec python -m llava.eval.grid --report "$@"
