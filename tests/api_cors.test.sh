#!/usr/bin/env bash
# api_cors.test.sh - a web page of another origin calls the API in headless Chromium
# (playwright-core, tests/e2e/cors.test.mjs): allowed by `--cors ORIGIN` (preflight, JSON,
# a streamed reply read through fetch), refused by a server without it.
set -euo pipefail
source "$(dirname "$0")/e2e/server.sh"
if [ ! -x "${CHROMIUM:-/usr/bin/chromium}" ]; then
    echo "chromium not installed (scripts/setup.sh installs it)" >&2
    exit 1
fi
e2e_npm
m=$MESHLLM_TEST_MODELS/stories260K.gguf
# Loopback pages of any port are the node's own (as Ollama allows them), so the calling
# page is served under another name: Chromium maps page.test to 127.0.0.1, and the page's
# server answers to that name (--allowed-host).
e2e_start PAGE --model "$m" --threads 1 --allowed-host page.test
origin=http://page.test:${PAGE##*:}
e2e_start API --model "$m" --threads 1 --cors "$origin" # lets pages of that origin call it
e2e_start PLAIN --model "$m" --threads 1                # no --cors
# the preflight Chromium sends before a JSON POST, as curl sends it
pre() { curl -s -o /dev/null -D - -X OPTIONS -H "Origin: $origin" -H 'Access-Control-Request-Method: POST' \
    -H 'Access-Control-Request-Headers: content-type' "$1/v1/chat/completions" | tr -d '\r'; }
pre "$API" | grep -qi "^access-control-allow-origin: $origin$" || { echo "no preflight answer"; exit 1; }
pre "$PLAIN" | grep -qi '^access-control-allow-origin' && { echo "PLAIN allowed the origin"; exit 1; }
MESHLLM_ORIGIN=$origin MESHLLM_API=$API MESHLLM_PLAIN=$PLAIN \
    node --test --test-concurrency=1 "$E2E_DIR/cors.test.mjs"
