#!/usr/bin/env bash
# Serve LLaVA-OneVision with LLaVA-Scissor compression through vLLM's OpenAI-compatible server.
#
#   bash scripts/serve.sh --model DIR_OR_HUB_ID [--retention-ratio 0.1] [--frames 32] [--videos-per-prompt 1]
#                         [--host 127.0.0.1] [--port 8000] [any vLLM server flag, e.g. --dtype bfloat16]
#
# Every video keeps exactly max(1, round(R * frames * 196)) visual tokens (R = 1: no compression, stock layout).
# Clients may set their own ratio per request: "mm_processor_kwargs": {"retention_ratio": 0.25}. --frames is both
# the number of frames vLLM samples from a video URL and the frame count the encoder cache is sized for.
# The model must be a llava-hf checkpoint (llava-hf/llava-onevision-qwen2-0.5b-ov-hf etc.).
# PYTHON=/path/to/python picks the interpreter; without vLLM there, .venv-vllm (scripts/vllm_venv.sh) is used.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
model="" ratio=0.1 frames=32 videos=1 host=127.0.0.1 port=8000
extra=()
while (($#)); do
    case "$1" in
        --model) model=$2; shift 2 ;;
        --retention-ratio) ratio=$2; shift 2 ;;
        --frames) frames=$2; shift 2 ;;
        --videos-per-prompt) videos=$2; shift 2 ;;
        --host) host=$2; shift 2 ;;
        --port) port=$2; shift 2 ;;
        -h | --help) sed -n '2,12p' "$0"; exit 0 ;;
        *) extra+=("$1"); shift ;;
    esac
done
if [[ -z $model ]]; then
    echo "error: --model is required (a llava-hf checkpoint directory or hub id)" >&2
    exit 2
fi

python=${PYTHON:-python}
if ! "$python" -c "import vllm" 2>/dev/null; then
    if [[ -x "$ROOT/.venv-vllm/bin/python" ]]; then
        python="$ROOT/.venv-vllm/bin/python"
    else
        echo "error: vLLM is not installed for $python: pip install -e '$ROOT[serve]' (GPU), or" \
            "bash scripts/vllm_venv.sh (CPU build in .venv-vllm)" >&2
        exit 2
    fi
fi
plugin_check='from importlib.metadata import entry_points as e; import sys
sys.exit(not any(p.name == "llava_scissor" for p in e(group="vllm.general_plugins")))'
if ! "$python" -c "$plugin_check"; then
    echo "installing the llava_scissor vLLM plugin into $python (pip install --no-deps -e $ROOT)" >&2
    "$python" -m pip install --quiet --no-deps -e "$ROOT"
fi
# one-line errors for bad values before vLLM's minute-long start
"$python" - "$ratio" "$frames" "$videos" <<'EOF' || exit 2
import json, sys
from llava.serving.budget import retention_ratio
try:
    retention_ratio({"retention_ratio": json.loads(sys.argv[1])})
    for flag, value in (("--frames", sys.argv[2]), ("--videos-per-prompt", sys.argv[3])):
        if not value.isdigit() or int(value) < 1:
            raise ValueError(f"{flag} must be a positive integer, got {value!r}")
except ValueError as err:
    sys.exit(f"error: {err}")
EOF

exec "$python" -m vllm.entrypoints.openai.api_server --model "$model" --host "$host" --port "$port" \
    --hf-overrides '{"architectures": ["LlavaScissorOnevisionForConditionalGeneration"]}' \
    --mm-processor-kwargs "{\"retention_ratio\": $ratio}" --trust-request-mm-kwargs \
    --limit-mm-per-prompt "{\"video\": {\"count\": $videos, \"num_frames\": $frames}}" \
    --media-io-kwargs "{\"video\": {\"num_frames\": $frames}}" \
    "${extra[@]}"
