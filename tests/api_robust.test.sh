#!/usr/bin/env bash
# api_robust.test.sh - `meshllm serve` survives malformed, oversized and slow-loris requests,
# cancels vanished clients, answers 429 when its queue is full and stops cleanly on SIGTERM.
set -euo pipefail
source "$(dirname "$0")/e2e/server.sh"
e2e_npm
MESHLLM_BIN=$MESHLLM_BIN MESHLLM_MODEL_PATH=$MESHLLM_TEST_MODELS/stories260K.gguf \
    node --test --test-concurrency=1 "$E2E_DIR/robust.test.mjs"
