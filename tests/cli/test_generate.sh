#!/usr/bin/env bash
# hearth generate: tiny-gpt-oss greedy output equals the golden continuation
# (exact ids: the CPU path matches the float32 reference), plus the error
# paths (missing model, bad flags) exit non-zero with one line on stderr.
set -uo pipefail
BIN="${HEARTH_BIN:?}"
FIX="${HEARTH_FIXTURES:?}"
M="$FIX/models/tiny-gpt-oss"
fail=0
check() { if eval "$2"; then echo "ok: $1"; else echo "FAIL: $1"; fail=1; fi; }

read -r PROMPT GREEDY < <(python3 -c '
import json, sys
g = json.load(open(sys.argv[1] + "/golden.json"))
print(",".join(map(str, g["prompts"][0])), ",".join(map(str, g["greedy"][0])))' "$M")

out=$("$BIN" generate --model "$M" --prompt-ids "$PROMPT" --max-tokens 24 --ignore-eos --json --device cpu --threads 2 2>/tmp/gen_err.$$)
rc=$?
check "generate exits 0" '[ $rc -eq 0 ]'
ids=$(printf '%s\n' "$out" | tail -n1 | python3 -c '
import json, sys
j = json.loads(sys.stdin.read())
assert j["generated_tokens"] == len(j["ids"]) and j["prompt_tokens"] > 0 and j["gen_tps"] > 0
print(",".join(map(str, j["ids"])))' 2>/dev/null)
check "ids equal golden greedy_0 ($GREEDY)" '[ "$ids" = "$GREEDY" ]'
check "throughput line on stderr with --json" 'grep -q "tok/s" /tmp/gen_err.$$'

# streaming (non-JSON) mode prints the same continuation (text when the
# model has a tokenizer, else ids), then the throughput line
"$BIN" generate --model "$M" --prompt-ids "$PROMPT" --max-tokens 24 --ignore-eos --device cpu >/tmp/gen_plain.$$ 2>/dev/null
printf '%s\n' "$out" | tail -n1 > /tmp/gen_json.$$
python3 - /tmp/gen_plain.$$ /tmp/gen_json.$$ <<'PY'
import json, sys
plain = open(sys.argv[1], encoding="utf-8", errors="replace").read()
j = json.loads(open(sys.argv[2]).read())
want = j["text"] if "text" in j else " ".join(map(str, j["ids"]))
ok = plain.startswith(want + "\n") and "tok/s" in plain.splitlines()[-1]
sys.exit(0 if ok else 1)
PY
check "streamed output equals the JSON continuation" '[ $? -eq 0 ]'
rm -f /tmp/gen_plain.$$ /tmp/gen_json.$$

# seeded sampling is reproducible
s1=$("$BIN" generate --model "$M" --prompt-ids "$PROMPT" --max-tokens 8 --temperature 0.8 --top-p 0.9 --top-k 50 --seed 7 --json --device cpu 2>/dev/null | tail -n1)
s2=$("$BIN" generate --model "$M" --prompt-ids "$PROMPT" --max-tokens 8 --temperature 0.8 --top-p 0.9 --top-k 50 --seed 7 --json --device cpu 2>/dev/null | tail -n1)
check "seeded sampling reproducible" '[ -n "$s1" ] && [ "$(echo "$s1" | python3 -c "import json,sys; print(json.load(sys.stdin)[\"ids\"])")" = "$(echo "$s2" | python3 -c "import json,sys; print(json.load(sys.stdin)[\"ids\"])")" ]'

# errors: non-zero exit and exactly one line on stderr
err_case() {
    local name="$1"; shift
    "$BIN" generate "$@" >/dev/null 2>/tmp/gen_err.$$
    local rc=$? lines
    lines=$(wc -l < /tmp/gen_err.$$)
    check "$name: non-zero exit ($rc), one line ($lines)" '[ $rc -ne 0 ] && [ "$lines" -eq 1 ]'
    sed 's/^/    /' /tmp/gen_err.$$
}
err_case "missing model dir" --model /nonexistent/model --prompt-ids 1,2,3
err_case "bad --max-tokens" --model "$M" --prompt-ids 1,2,3 --max-tokens abc
err_case "bad --prompt-ids" --model "$M" --prompt-ids 1,,x
err_case "unknown flag" --model "$M" --prompt-ids 1 --frobnicate
err_case "token out of vocabulary" --model "$M" --prompt-ids 999999 --device cpu
tmpd=$(mktemp -d)
printf '{"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "vocab_size": 10}' > "$tmpd/config.json"
err_case "unsupported architecture" --model "$tmpd" --prompt-ids 1 --device cpu
grep -q "gpt2" /tmp/gen_err.$$; check "unsupported architecture is named" '[ $? -eq 0 ]'
rm -rf "$tmpd"
"$BIN" generate --help | grep -q -- "--min-tokens"; check "--help lists flags" '[ $? -eq 0 ]'
rm -f /tmp/gen_err.$$
exit $fail
