#!/usr/bin/env bash
# The serving tests (tests/test_serving*.py) in .venv-vllm, which scripts/vllm_venv.sh creates or reuses.
# In the main environment (scripts/test.sh) the tests that need vLLM skip and say so; CI (.ci/run) runs this.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="$(bash scripts/vllm_venv.sh | tail -n 1)"
"$PY" -m pytest -q -rs "$@" tests/test_serving*.py
