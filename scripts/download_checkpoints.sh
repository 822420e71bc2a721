#!/usr/bin/env bash
# Download supported LLaVA-OneVision / LLaVA-Scissor checkpoints into checkpoints/<name> (huggingface_hub).
#
#   bash scripts/download_checkpoints.sh [0.5b|7b|all] [--family onevision|scissor|hf|all] [--dest DIR] [--dry-run]
#
# Defaults: 0.5b, --family onevision (lmms-lab/llava-onevision-qwen2-0.5b-ov, the default config's checkpoint),
# --dest <repo>/checkpoints. Families: onevision = lmms-lab (LLaVA-NeXT format), hf = llava-hf (transformers
# format), scissor = BBBBCHAN/LLaVA-Scissor-baseline (the paper's Qwen2.5 baselines). See checkpoints/README.md.
# Only config, tokenizer and *.safetensors files are fetched (the loader's own file patterns).
# Then run with: bash scripts/infer_video.sh --model checkpoints/<name> ...
# A checkpoint that cannot be fetched (offline, gated, typo) is reported with how to supply a local copy; the
# others still download; the exit code is 1 if any failed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PYTHONPATH="${ROOT}${PYTHONPATH:+:${PYTHONPATH}}"
PYTHON="${PYTHON:-python}"

usage() { sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

size="0.5b"; family="onevision"; dest="${ROOT}/checkpoints"; dry_run=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    0.5b|7b|all) size="$1" ;;
    --family) family="${2:-}"; shift ;;
    --family=*) family="${1#--family=}" ;;
    --dest) dest="${2:-}"; shift ;;
    --dest=*) dest="${1#--dest=}" ;;
    --dry-run) dry_run=1 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "error: unknown argument '$1'; expected 0.5b|7b|all, --family onevision|scissor|hf|all, --dest DIR," \
            "--dry-run" >&2; exit 2 ;;
  esac
  shift
done
case "$family" in onevision|scissor|hf|all) ;; *)
  echo "error: --family must be onevision, scissor, hf or all, got '${family}'" >&2; exit 2 ;;
esac

repos_for() {  # $1 = family, $2 = size (0.5b|7b)
  case "$1:$2" in
    onevision:0.5b) echo "lmms-lab/llava-onevision-qwen2-0.5b-ov" ;;
    onevision:7b)   echo "lmms-lab/llava-onevision-qwen2-7b-ov" ;;
    hf:0.5b)        echo "llava-hf/llava-onevision-qwen2-0.5b-ov-hf" ;;
    hf:7b)          echo "llava-hf/llava-onevision-qwen2-7b-ov-hf" ;;
    scissor:0.5b)   echo "BBBBCHAN/LLaVA-Scissor-baseline-0.5B" ;;
    scissor:7b)     echo "BBBBCHAN/LLaVA-Scissor-baseline-7B" ;;
  esac
}

repos=()
for f in $([[ "$family" == all ]] && echo "onevision hf scissor" || echo "$family"); do
  for s in $([[ "$size" == all ]] && echo "0.5b 7b" || echo "$size"); do
    repos+=("$(repos_for "$f" "$s")")
  done
done

failed=()
for repo in "${repos[@]}"; do
  target="${dest}/${repo#*/}"
  if [[ "$dry_run" == 1 ]]; then
    echo "would download ${repo} -> ${target}"
    continue
  fi
  echo "downloading ${repo} -> ${target}"
  if "$PYTHON" - "$repo" "$target" <<'PY'
import sys

from huggingface_hub import snapshot_download

from llava.model.checkpoint import HUB_PATTERNS

repo, target = sys.argv[1], sys.argv[2]
try:
    snapshot_download(repo, local_dir=target, allow_patterns=HUB_PATTERNS)
except Exception as err:  # report every failure (network, auth, disk) as one line and let bash carry on
    reason = " ".join(str(err).split())[:300]
    print(f"error: could not fetch {repo} ({type(err).__name__}: {reason})", file=sys.stderr)
    sys.exit(1)
PY
  then
    echo "ok: ${repo} -> use it with --model ${target}"
  else
    failed+=("$repo")
    echo "  To use a local copy: on a machine with network run \`hf download ${repo} --local-dir DIR\`," \
         "copy DIR to this machine (e.g. to ${target}) and pass --model DIR (or set model.path in the config)." >&2
  fi
done

if [[ ${#failed[@]} -gt 0 ]]; then
  echo "could not fetch: ${failed[*]}" >&2
  exit 1
fi
