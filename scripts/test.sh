#!/usr/bin/env bash
# Set up what the tests need on a fresh machine, then run them.
# Torch is installed first (pinned) so that resolving the package never pulls a different torch build.
set -euo pipefail
cd "$(dirname "$0")/.."
python -c "import torch" 2>/dev/null || pip install --quiet "torch==2.13.0"
pip install --quiet -e ".[test]"
# lmms-eval 0.7.3 for the stock-class and llava.eval tests, without its dependencies (torchvision would replace
# the pinned CPU torch with a CUDA build that fails to import); what our two paths need comes from our extra.
# The vLLM serving tests skip here (vLLM lives in its own venv): bash scripts/test_serving.sh runs them.
pins=$(mktemp) && python -c "import torch; print('torch==' + torch.__version__)" > "$pins"  # keep this torch
pip install --quiet --no-deps --no-warn-conflicts "lmms-eval==0.7.3"
pip install --quiet --no-warn-conflicts -c "$pins" -e ".[lmms-eval-nodeps]" && rm -f "$pins"
python -m pytest -q -rs "$@" tests
