#!/usr/bin/env bash
# cli_serve_flags.test.sh - `meshllm serve` takes llama-server's spellings: -np/--parallel for
# --slots, -c/--ctx-size for --ctx, and the GPU-only flags (-ngl, -fa, -ts, -mg) accepted with
# one "this build runs on the CPU" line each; --api-key-file (first line = key, bad files exit
# 2); --alias; --temp/--top-k/-n as server-side sampling defaults and a request without "model";
# an unknown flag is still refused (exit 2).
set -euo pipefail
source "$(dirname "$0")/e2e/server.sh"
m=$MESHLLM_TEST_MODELS/stories260K.gguf
e2e_start A --model "$m" -np 3 -c 128 -ngl 99 -fa on --tensor-split 1,0
curl -sf "$A/node/status" | python3 -c "
import json, sys
d = json.load(sys.stdin)
ms = [x for x in d['models'] if x.get('state') == 'ready']
assert ms and ms[0]['slots'] == 3 and ms[0]['n_ctx'] == 128, d"
grep -q '^meshllm: serve: -ngl 99 ignored: this build runs on the CPU$' "$A_LOG"
grep -Eq '^meshllm: model stories260K ready in [0-9]+\.[0-9]{2} s \(5 layers, 1 MiB of weights\)$' "$A_LOG"
grep -q '^meshllm: serve: -fa on ignored: this build runs on the CPU$' "$A_LOG"
grep -q '^meshllm: serve: --tensor-split 1,0 ignored: this build runs on the CPU$' "$A_LOG"
e2e_start B --model "$m" --parallel 2 --ctx-size 64
curl -sf "$B/node/status" | python3 -c "
import json, sys
d = json.load(sys.stdin)
ms = [x for x in d['models'] if x.get('state') == 'ready']
assert ms and ms[0]['slots'] == 2 and ms[0]['n_ctx'] == 64, d"
# --api-key-file: the first line is the key; /v1/models needs it, /health does not
printf 'sekrit-key\n' >"$E2E_TMP/key"
e2e_start K --model "$m" --api-key-file "$E2E_TMP/key"
[ "$(curl -s -o /dev/null -w '%{http_code}' "$K/v1/models")" = 401 ]
[ "$(curl -s -o /dev/null -w '%{http_code}' -H 'Authorization: Bearer sekrit-key' "$K/v1/models")" = 200 ]
[ "$(curl -s -o /dev/null -w '%{http_code}' "$K/health")" = 200 ]
# server-side sampling defaults (--temp, --top-k, -n) fill what a request leaves out, and a
# request without "model" goes to the node's model, as llama-server does; --alias names it
e2e_start S --model "$m" --alias tiny --temp 0 --top-k 1 -n 7
comp() { curl -sf "$S/v1/completions" -H 'content-type: application/json' -d "$1"; }
a=$(comp '{"prompt":"Once upon a time"}')
b=$(comp '{"prompt":"Once upon a time","temperature":0,"max_tokens":7,"model":"tiny"}')
c=$(comp '{"prompt":"Once upon a time","max_tokens":2}')
python3 - "$a" "$b" "$c" <<'PY'
import json, sys
a, b, c = (json.loads(x) for x in sys.argv[1:])
assert a["model"] == "tiny", a                          # --alias names the model
assert a["usage"]["completion_tokens"] == 7, a          # -n 7
assert a["choices"][0]["text"] == b["choices"][0]["text"], (a, b)  # --temp 0: greedy
assert c["usage"]["completion_tokens"] == 2, c          # the request's own max_tokens wins
PY
rc=0
"$MESHLLM_BIN" serve --model "$m" --port 0 --temp 3 >/dev/null 2>"$E2E_TMP/err" || rc=$?
[ "$rc" = 2 ] && grep -q "bad value '3' for --temp" "$E2E_TMP/err"
rc=0
: >"$E2E_TMP/empty"
"$MESHLLM_BIN" serve --model "$m" --port 0 --api-key-file "$E2E_TMP/empty" >/dev/null 2>"$E2E_TMP/err" || rc=$?
[ "$rc" = 2 ] && grep -q "api-key-file .*first line must hold the key" "$E2E_TMP/err"
rc=0
"$MESHLLM_BIN" serve --model "$m" --port 0 --api-key-file "$E2E_TMP/none" >/dev/null 2>"$E2E_TMP/err" || rc=$?
[ "$rc" = 2 ] && grep -q "api-key-file .*No such file" "$E2E_TMP/err"
rc=0
"$MESHLLM_BIN" serve --model "$m" --port 0 --no-such-flag 1 >/dev/null 2>"$E2E_TMP/err" || rc=$?
[ "$rc" = 2 ] && grep -q "unknown option --no-such-flag" "$E2E_TMP/err"
rc=0
"$MESHLLM_BIN" serve --model "$m" --port 0 --alias a/b >/dev/null 2>"$E2E_TMP/err" || rc=$?
[ "$rc" = 2 ] && grep -q "alias 'a/b'" "$E2E_TMP/err"
echo "cli_serve_flags: ok"
