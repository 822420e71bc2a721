#!/usr/bin/env bash
# Answer a question about one video: a thin wrapper over `python -m llava.infer` (all flags pass through).
#
#   bash scripts/infer_video.sh --video clip.mp4 --question "What happens?" [--retention-ratio 0.05] [--json]
#   bash scripts/infer_video.sh            # default config on the demo clip assets/demo.mp4
#   bash scripts/infer_video.sh --help     # every flag
#
# Works from any directory: the repo is put on PYTHONPATH, and relative --video / --visualize paths stay
# relative to where you run it. PYTHON=/path/to/python picks the interpreter.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PYTHONPATH="${ROOT}${PYTHONPATH:+:${PYTHONPATH}}"
if ! "${PYTHON:-python}" -c "import torch, transformers, av, yaml, safetensors" 2>/dev/null; then
    echo "first run: installing llava-scissor and its dependencies (pip install -e ${ROOT})" >&2
    "${PYTHON:-python}" -m pip install --quiet -e "${ROOT}"
fi
exec "${PYTHON:-python}" -m llava.infer "$@"
