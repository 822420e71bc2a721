#!/usr/bin/env bash
# Set up what the tests need on a fresh machine, then run them.
# Torch is installed first (pinned) so that resolving the package never pulls a different torch build.
set -euo pipefail
cd "$(dirname "$0")/.."
python -c "import torch" 2>/dev/null || pip install --quiet "torch==2.13.0"
pip install --quiet -e ".[test]"
python -m pytest -q -rs "$@" tests
