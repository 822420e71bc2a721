#!/usr/bin/env bash
# Install what the tests need into the current Python, then run the CPU test suite (about 10 minutes on 2 cores).
#
# What it installs, in order:
#   1. torch 2.13.0, only if no torch is installed: pip's default build for this machine, which on Linux x86_64
#      is PyPI's CUDA build (about 2.8 GB with its nvidia wheels). For a CPU-only build run this first:
#          pip install torch --index-url https://download.pytorch.org/whl/cpu
#   2. this package in editable mode with its `test` extra (pytest, scipy, ruff, selenium) and its `demo` extra
#      (gradio), so the web demo is tested too (its browser test needs Debian's chromium and chromium-driver and
#      skips, saying so, without them);
#   3. lmms-eval 0.7.3 without its dependencies, then the `lmms-eval-nodeps` extra (what our two lmms-eval paths
#      import), with the installed torch pinned: lmms-eval's own requirements pull torchvision, whose PyPI wheels
#      would replace the installed torch.
# The vLLM serving tests skip here (vLLM lives in its own venv): bash scripts/test_serving.sh runs them.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! python -c "import torch" 2>/dev/null; then
    echo "test.sh: no torch in $(python -c 'import sys; print(sys.prefix)'); installing torch 2.13.0 (on Linux" \
         "x86_64 PyPI's CUDA build, ~2.8 GB; Ctrl-C and install the CPU build first if you want that)" >&2
    pip install "torch==2.13.0"
fi
echo "test.sh: installing llava-scissor[test,demo], lmms-eval 0.7.3 (--no-deps) and llava-scissor[lmms-eval-nodeps]" >&2
pip install --quiet -e ".[test,demo]"
pins=$(mktemp) && python -c "import torch; print('torch==' + torch.__version__)" > "$pins"  # keep this torch
pip install --quiet --no-deps --no-warn-conflicts "lmms-eval==0.7.3"
pip install --quiet --no-warn-conflicts -c "$pins" -e ".[lmms-eval-nodeps]" && rm -f "$pins"
python -m pytest -q -rs "$@" tests
