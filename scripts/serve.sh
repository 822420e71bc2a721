#!/usr/bin/env bash
# Serve LLaVA-OneVision with video token compression through vLLM's OpenAI-compatible server.
#
#   bash scripts/serve.sh --model DIR_OR_HUB_ID [--method scc] [--retention-ratio 0.1] [--frames 32]
#                         [--videos-per-prompt 1] [--host 127.0.0.1] [--port 8000] [any vLLM server flag]
#   bash scripts/serve.sh --model DIR_OR_HUB_ID --video-pruning-rate Q [--video-pruning-method evs|vidcom2] ...
#
# Every video keeps exactly max(1, round(R * frames * 196)) visual tokens (R = 1: no compression, stock layout),
# chosen by --method (scc, random, uniform, l2norm, evs or vidcom2). vLLM's own --video-pruning-rate Q (the
# fraction pruned) and --video-pruning-method set the method at R = 1 - Q instead: give those or --method /
# --retention-ratio. Clients may set their own per request: "mm_processor_kwargs": {"method": "evs",
# "retention_ratio": 0.25}. --frames is both the number of frames vLLM samples from a video URL and the frame count
# the encoder cache is sized for. The model must be a llava-hf checkpoint (llava-hf/llava-onevision-qwen2-0.5b-ov-hf).
# PYTHON=/path/to/python picks the interpreter; without vLLM there, .venv-vllm (scripts/vllm_venv.sh) is used.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
model="" method="" ratio="" rate="" pruning_method="" frames=32 videos=1 host=127.0.0.1 port=8000
extra=()
while (($#)); do
    case "$1" in
        --model) model=$2; shift 2 ;;
        --method) method=$2; shift 2 ;;
        --retention-ratio) ratio=$2; shift 2 ;;
        --video-pruning-rate) rate=$2; shift 2 ;;
        --video-pruning-rate=*) rate=${1#*=}; shift ;;
        --video-pruning-method) pruning_method=$2; shift 2 ;;
        --video-pruning-method=*) pruning_method=${1#*=}; shift ;;
        --frames) frames=$2; shift 2 ;;
        --videos-per-prompt) videos=$2; shift 2 ;;
        --host) host=$2; shift 2 ;;
        --port) port=$2; shift 2 ;;
        -h | --help) sed -n '2,14p' "$0"; exit 0 ;;
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
# one-line errors for bad values before vLLM's minute-long start; prints the engine's compression flags
compression=$("$python" - "$method" "$ratio" "$rate" "$pruning_method" "$frames" "$videos" <<'EOF'
import json, sys
from llava.serving.budget import DEFAULT_METHOD, PRUNING_METHODS, pruning_defaults, requested_budget

def value(text):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text

method, ratio, rate, pruning_method, frames, videos = sys.argv[1:]
try:
    for flag, count in (("--frames", frames), ("--videos-per-prompt", videos)):
        if not count.isdigit() or int(count) < 1:
            raise ValueError(f"{flag} must be a positive integer, got {count!r}")
    if rate or pruning_method:
        if method or ratio:
            raise ValueError("give --method / --retention-ratio or vLLM's --video-pruning-rate / "
                             "--video-pruning-method (r = 1 - q), not both")
        if not rate:
            raise ValueError("--video-pruning-method needs --video-pruning-rate (the fraction pruned, in [0, 1))")
        pruning_method = pruning_method or PRUNING_METHODS[0]  # vLLM's default
        pruning_defaults((pruning_method, value(rate)), {})
        print(f"--video-pruning-rate {rate} --video-pruning-method {pruning_method}")
    else:
        budget = requested_budget({"method": method or DEFAULT_METHOD, "retention_ratio": value(ratio or "0.1")})
        kwargs = {"method": budget.method, "retention_ratio": budget.ratio}
        print("--mm-processor-kwargs", json.dumps(kwargs, separators=(",", ":")))
except ValueError as err:
    sys.exit(f"error: {err}")
EOF
) || exit 2
read -r -a compression_flags <<<"$compression"

exec "$python" -m vllm.entrypoints.openai.api_server --model "$model" --host "$host" --port "$port" \
    --hf-overrides '{"architectures": ["LlavaScissorOnevisionForConditionalGeneration"]}' \
    "${compression_flags[@]}" --trust-request-mm-kwargs \
    --limit-mm-per-prompt "{\"video\": {\"count\": $videos, \"num_frames\": $frames}}" \
    --media-io-kwargs "{\"video\": {\"num_frames\": $frames}}" \
    "${extra[@]}"
