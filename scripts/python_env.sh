# Sourced by the wrapper scripts (infer_video.sh, demo.sh): the repository root, the interpreter and a cheap
# dependency check. PYTHON=/path/to/python picks the interpreter; the repository goes on PYTHONPATH so the scripts
# work from any directory. `has MODULE...` looks the modules up with find_spec, without importing them (importing
# torch + transformers takes seconds), so --help and a bad flag answer at once.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python}"
export PYTHONPATH="${ROOT}${PYTHONPATH:+:${PYTHONPATH}}"
FIND='import importlib.util, sys; sys.exit(any(importlib.util.find_spec(m) is None for m in sys.argv[1:]))'
has() { "${PY}" -c "${FIND}" "$@" 2>/dev/null; }
