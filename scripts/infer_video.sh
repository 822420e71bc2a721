#!/usr/bin/env bash
# Answer questions about one video: a thin wrapper over `python -m llava.infer` (all flags pass through).
#
#   bash scripts/infer_video.sh --video clip.mp4 --question "What happens?" [--retention-ratio 0.05] [--json]
#   bash scripts/infer_video.sh --video clip.mp4 --question "Who?" --question "Where?"   # one encoding, two answers
#   bash scripts/infer_video.sh            # default config on the demo clip llava/assets/demo.mp4
#   bash scripts/infer_video.sh --help     # every flag
#
# Works from any directory: the repo is put on PYTHONPATH, and relative --video / --visualize paths stay
# relative to where you run it. PYTHON=/path/to/python picks the interpreter.
#
# First run: if torch / transformers are missing, this installs the package into that interpreter with pip. pip
# then picks torch for this machine: on Linux that is PyPI's default CUDA build (several GB). On a CPU-only
# machine install the CPU build first (pip install torch --index-url https://download.pytorch.org/whl/cpu).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/python_env.sh"  # ROOT, PY, PYTHONPATH, has MODULE...
if ! has torch transformers av yaml safetensors; then
    if has torch; then
        echo "first run: installing llava-scissor's dependencies into $("${PY}" -c 'import sys; print(sys.prefix)')" \
             "(torch $("${PY}" -c 'from importlib.metadata import version; print(version("torch"))') is kept)" >&2
    else
        echo "first run: installing llava-scissor and its dependencies, torch included (PyPI's default torch build:" \
             "on Linux a CUDA build of several GB; Ctrl-C and install a CPU build first if you want one)" >&2
    fi
    "${PY}" -m pip install --progress-bar on -e "${ROOT}" >&2
fi
exec "${PY}" -m llava.infer "$@"
