#!/usr/bin/env bash
# api_store.test.sh - the official ollama npm client lists, pulls (with progress, from a
# local Range-capable server), shows and deletes through `meshllm serve` (tests/e2e/store.test.mjs).
set -euo pipefail
source "$(dirname "$0")/e2e/server.sh"
e2e_npm
export no_proxy=127.0.0.1,localhost NO_PROXY=127.0.0.1,localhost
export MESHLLM_MODELS=$E2E_TMP/store
mkdir -p "$E2E_TMP/www"
cp "$MESHLLM_TEST_MODELS/stories260K.gguf" "$E2E_TMP/www/e2e.gguf"
sha=$(sha256sum "$E2E_TMP/www/e2e.gguf" | cut -c1-64)
echo "$sha" >"$E2E_TMP/www/e2e.gguf.sha256"
python3 "$root/tests/util/range_server.py" "$E2E_TMP/www" "$E2E_TMP/port" "$E2E_TMP/log" &
E2E_PIDS+=($!)
for _ in $(seq 100); do [ -f "$E2E_TMP/port" ] && break; sleep 0.05; done
e2e_start URL --threads 1
MESHLLM_URL=$URL MESHLLM_PULL_URL="http://127.0.0.1:$(cat "$E2E_TMP/port")/e2e.gguf" MESHLLM_PULL_SHA=$sha \
    node --test --test-concurrency=1 "$E2E_DIR/store.test.mjs"
