# server.sh - helpers sourced by tests/api_*.test.sh: install the npm packages, start
# `meshllm serve` on 127.0.0.1 with a free port (--port 0, port read from its output), and stop
# every server started, whatever happens (trap on EXIT).
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
MESHLLM_BIN=${MESHLLM_BIN:-$root/build/meshllm}
MESHLLM_TEST_MODELS=${MESHLLM_TEST_MODELS:-$root/../shared/models}
E2E_DIR=$root/tests/e2e
E2E_PIDS=()
E2E_TMP=$(mktemp -d)

e2e_cleanup() {
    local rc=$? p
    set +e
    for p in "${E2E_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
    for p in "${E2E_PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$p" 2>/dev/null
        wait "$p" 2>/dev/null
    done
    [ -n "${E2E_KEEP:-}" ] || rm -rf "$E2E_TMP"
    exit "$rc"
}
trap e2e_cleanup EXIT

# npm ci from the committed lock file, once (skipped when node_modules is current).
e2e_npm() {
    if [ ! -f "$E2E_DIR/node_modules/.package-lock.json" ] ||
        [ "$E2E_DIR/package-lock.json" -nt "$E2E_DIR/node_modules/.package-lock.json" ]; then
        (cd "$E2E_DIR" && npm ci --no-audit --no-fund --loglevel=error) || return 1
    fi
}

# e2e_start VAR ARGS... : starts a server, waits until /health answers 200 (or 503 with a
# model that cannot load) and stores its base URL in VAR.
e2e_start() {
    local var=$1
    shift
    local log=$E2E_TMP/server-${#E2E_PIDS[@]}.log
    "$MESHLLM_BIN" serve --host 127.0.0.1 --port 0 "$@" >"$log" 2>&1 &
    local pid=$!
    E2E_PIDS+=("$pid")
    local port=""
    for _ in $(seq 200); do
        port=$(grep -oE 'API at http://127\.0\.0\.1:[0-9]+' "$log" | grep -oE '[0-9]+$' | head -1 || true)
        [ -n "$port" ] && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    if [ -z "$port" ]; then
        echo "server did not start:" >&2
        cat "$log" >&2
        return 1
    fi
    local code="" body
    for _ in $(seq 400); do
        body=$(curl -s -w '\n%{http_code}' "http://127.0.0.1:$port/health" || true)
        code=${body##*$'\n'}
        [ "$code" = 200 ] && break
        # 503 "error": no model could load; "loading model": keep waiting
        [ "$code" = 503 ] && [[ "$body" == *'"status":"error"'* ]] && break
        sleep 0.05
    done
    printf -v "$var" 'http://127.0.0.1:%s' "$port"
    eval "${var}_LOG=\$log ${var}_PID=\$pid"
}
