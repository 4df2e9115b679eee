#!/usr/bin/env bash
# api_health.test.sh - /health tells the truth: 200 {"status":"ok"} once the model is ready,
# 503 {"status":"error","error":"NAME: reason"} when no model could load (llama-server's
# status codes), with no key needed.
set -euo pipefail
source "$(dirname "$0")/e2e/server.sh"
e2e_start A --model "$MESHLLM_TEST_MODELS/stories260K.gguf" --api-key k
[ "$(curl -s -w ' %{http_code}' "$A/health")" = '{"status":"ok"} 200' ]
printf 'not a gguf' >"$E2E_TMP/broken.gguf"
log=$E2E_TMP/broken.log
"$MESHLLM_BIN" serve --host 127.0.0.1 --port 0 --model "$E2E_TMP/broken.gguf" >"$log" 2>&1 &
E2E_PIDS+=("$!")
port=""
for _ in $(seq 200); do
    port=$(grep -oE 'API at http://127\.0\.0\.1:[0-9]+' "$log" | grep -oE '[0-9]+$' | head -1 || true)
    [ -n "$port" ] && break
    sleep 0.05
done
[ -n "$port" ]
out=""
for _ in $(seq 200); do
    out=$(curl -s -w ' %{http_code}' "http://127.0.0.1:$port/health")
    case $out in *'"loading model"'*) sleep 0.05 ;; *) break ;; esac
done
echo "$out" | python3 -c "
import json, sys
body, code = sys.stdin.read().rsplit(' ', 1)
d = json.loads(body)
assert code.strip() == '503' and d['status'] == 'error', (code, d)
assert d['error'].startswith('broken: ') and 'not a GGUF file' in d['error'], d"
echo "api_health: ok"
