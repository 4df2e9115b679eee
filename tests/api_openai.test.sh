#!/usr/bin/env bash
# api_openai.test.sh - `meshllm serve` on stories260K driven by the official openai npm client
# (chat, streaming, completions, models, embeddings, logprobs, every error status), the
# Ollama API, and 8 concurrent greedy streams vs the same prompts alone.
set -euo pipefail
source "$(dirname "$0")/e2e/server.sh"
e2e_npm
printf 'not a gguf file' >"$E2E_TMP/broken.gguf"
key=test-key-$RANDOM
# the command line: --help, misuse, a model that does not exist
"$MESHLLM_BIN" serve --help >"$E2E_TMP/help" # to a file: grep -q on a pipe may exit first (SIGPIPE)
grep -q -- '--ollama-port' "$E2E_TMP/help"
grep -q -- '--rate-limit N' "$E2E_TMP/help"
rc=0; "$MESHLLM_BIN" serve --model x --rate-limit -1 2>/dev/null || rc=$?; [ "$rc" = 2 ]
rc=0; "$MESHLLM_BIN" serve --route anywhere 2>"$E2E_TMP/err" || rc=$?; [ "$rc" = 2 ] && grep -q "local, own or mesh" "$E2E_TMP/err"
rc=0; "$MESHLLM_BIN" serve --model no-such-model-xyz --port 0 2>"$E2E_TMP/err" || rc=$?
[ "$rc" = 1 ] && grep -q "no-such-model-xyz" "$E2E_TMP/err"
e2e_start URL --model "$MESHLLM_TEST_MODELS/stories260K.gguf" --model "$E2E_TMP/broken.gguf" \
    --api-key "$key" --slots 8 --threads 1 --ollama-port 0
ollama_port=$(grep -oE 'Ollama API at http://127\.0\.0\.1:[0-9]+' "$URL_LOG" | grep -oE '[0-9]+$')
MESHLLM_OLLAMA_URL=http://127.0.0.1:$ollama_port MESHLLM_URL=$URL MESHLLM_KEY=$key MESHLLM_BIN=$MESHLLM_BIN \
    MESHLLM_MODEL_PATH=$MESHLLM_TEST_MODELS/stories260K.gguf MESHLLM_BROKEN=broken \
    node --test --test-concurrency=1 "$E2E_DIR/openai.test.mjs"
