#!/usr/bin/env bash
# cli_serve_flags.test.sh - `meshllm serve` takes llama-server's spellings: -np/--parallel for
# --slots, -c/--ctx-size for --ctx, and the GPU-only flags (-ngl, -fa, -ts, -mg) accepted with
# one "this build runs on the CPU" line each; --api-key-file (first line = key, bad files exit
# 2); an unknown flag is still refused (exit 2).
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
echo "cli_serve_flags: ok"
