#!/usr/bin/env bash
# Runs one script test: *.sh with bash, *.py with the test virtualenv's python.
# Exit code 77 means "skipped" (CTest SKIP_RETURN_CODE).
set -uo pipefail
t="$1"; shift
case "$t" in
  *.py)
    PY=$(bash "$(dirname "$0")/../scripts/venv.sh") || exit $?
    exec "$PY" "$t" "$@" ;;
  *.sh) exec bash "$t" "$@" ;;
  *) echo "run_script: unknown test type $t" >&2; exit 2 ;;
esac
