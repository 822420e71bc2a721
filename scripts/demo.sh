#!/usr/bin/env bash
# Start the web demo on this machine: a thin wrapper over `python -m llava.demo` (all flags pass through).
#
#   bash scripts/demo.sh                         # the default config's checkpoint (0.5B, downloaded on first use)
#   bash scripts/demo.sh --model /tmp/tiny       # offline: a tiny random checkpoint, made by
#                                                # python -m llava.testing.tiny_checkpoint /tmp/tiny --format original
#   bash scripts/demo.sh --port 7861 --device cuda
#   bash scripts/demo.sh --help                  # every flag
#
# Then open the URL it prints (http://127.0.0.1:7860 by default; the page is served to this machine only).
# Works from any directory; PYTHON=/path/to/python picks the interpreter.
#
# First run: if gradio (or the package's own dependencies) is missing, this installs the package with its `demo`
# extra into that interpreter with pip: gradio 6 and its web stack (fastapi, uvicorn, starlette, pandas, ...). If
# torch is missing too, pip picks PyPI's default build, which on Linux
# is a CUDA build of several GB; on a CPU-only machine install the CPU build first
# (pip install torch --index-url https://download.pytorch.org/whl/cpu).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/python_env.sh"  # ROOT, PY, PYTHONPATH, has MODULE...
if ! has gradio torch transformers av yaml safetensors; then
    echo "demo.sh: installing llava-scissor with its demo extra (gradio>=6,<7 and its web stack) into" \
         "$("${PY}" -c 'import sys; print(sys.prefix)')$(has torch || echo ', torch included (PyPI default build)')" >&2
    "${PY}" -m pip install --progress-bar on -e "${ROOT}[demo]" >&2
fi
exec "${PY}" -m llava.demo "$@"
