#!/usr/bin/env bash
# Creates (once) the Python virtualenv the differential and end-to-end tests use
# and prints its python. Packages come from PyPI; exit 77 (skip) when PyPI is unreachable.
# Usage: venv.sh [DIR]
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${1:-${HEARTH_VENV:-$ROOT/.venv}}"
REQ="$ROOT/tests/requirements.txt"
STAMP="$VENV/.req.sha"
want=$(sha256sum "$REQ" | cut -d' ' -f1)
exec 9>"$ROOT/.venv.lock"; flock 9
if [ -x "$VENV/bin/python" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$want" ]; then
    echo "$VENV/bin/python"; exit 0
fi
python3 -m venv "$VENV" >&2
if ! "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQ" >&2; then
    echo "venv: could not install tests/requirements.txt from PyPI" >&2
    exit 77
fi
echo "$want" > "$STAMP"
echo "$VENV/bin/python"
