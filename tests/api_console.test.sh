#!/usr/bin/env bash
# api_console.test.sh - the web console in headless Chromium (playwright-core) against
# `meshllm serve` with two models; screenshot saved as tests/artifacts/console.png.
set -euo pipefail
source "$(dirname "$0")/e2e/server.sh"
if [ ! -x "${CHROMIUM:-/usr/bin/chromium}" ]; then
    echo "chromium not installed (scripts/setup.sh installs it)" >&2
    exit 1
fi
e2e_npm
e2e_start URL --model "$MESHLLM_TEST_MODELS/stories260K.gguf" \
    --model "$MESHLLM_TEST_MODELS/stories260K-Q6_K.gguf" --threads 1
MESHLLM_URL=$URL ARTIFACTS=$root/tests/artifacts node --test --test-concurrency=1 "$E2E_DIR/console.test.mjs"
