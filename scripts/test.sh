#!/usr/bin/env bash
# Set up what the tests need on a fresh machine, then run them.
# Torch is installed first (pinned) so that resolving the package never pulls a different torch build.
set -euo pipefail
cd "$(dirname "$0")/.."
python -c "import torch" 2>/dev/null || pip install --quiet "torch==2.13.0"
pip install --quiet -e ".[test]"
# lmms-eval (llava.eval tests) without its torchvision pin, runtime deps explicit, torch kept at the CPU build
python -c "import lmms_eval, cv2, matplotlib" 2>/dev/null || { echo "torch==2.13.0" > /tmp/torch-pin.txt && pip install --quiet -c /tmp/torch-pin.txt --no-deps "lmms-eval==0.7.3" && pip install --quiet -c /tmp/torch-pin.txt "filelock<4" loguru datasets evaluate pytablewriter jsonlines tenacity sacrebleu tqdm-multiprocess python-dotenv pydantic opencv-python-headless matplotlib; }
python -m pytest -q "$@" tests
