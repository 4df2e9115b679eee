#!/usr/bin/env bash
# net_interop.test.sh - our libp2p stack against js-libp2p (tests/interop/peer.mjs), on
# 127.0.0.1 only, both directions:
#   A: a JS peer listens, our node dials it: ping + identify both ways on that connection
#      (the JS peer identifies us and pings us back), then the JS peer adds a protocol and
#      its identify push must reach us.
#   B: our node listens, the JS peer dials it: same checks the other way round, including
#      our identify push reaching the JS peer.
#   Both: the dialing side pushes 1 MiB through the other's /meshllm/test-echo/1 stream
#   (yamux windows and Noise framing across implementations).
# Installs the pinned npm packages into tests/interop/node_modules first; if npm cannot do
# that, the test FAILS (it never skips silently).
set -u
root=$(cd "$(dirname "$0")/.." && pwd)
build=${MESHLLM_BUILD:-build}
bin=$root/$build/tests/test_net_host
dir=$root/tests/interop
work=$(mktemp -d "${TMPDIR:-/tmp}/meshllm-interop-XXXXXX")
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
    wait 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
fail() {
    echo "FAIL: $*"
    for f in "$work"/*.out; do [ -f "$f" ] && { echo "--- $f"; cat "$f"; }; done
    exit 1
}

[ -x "$bin" ] || fail "$bin not built"
. "$dir/ensure_deps.sh"
ensure_interop_deps "$dir" "$work"
node_run() { (cd "$dir" && exec node --import ./polyfill.mjs peer.mjs "$@"); }

wait_for() { # file pattern
    for _ in $(seq 150); do
        grep -q "$2" "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

# ---- A: we dial js ----
node_run listen >"$work/a-js.out" 2>&1 &
pids+=($!)
wait_for "$work/a-js.out" "^js listening" || fail "A: JS peer did not start"
js_addr=$(sed -n 's/^js listening //p' "$work/a-js.out" | head -1)
case $js_addr in /ip4/127.0.0.1/tcp/*) ;; *) fail "A: JS peer address not on loopback: $js_addr" ;; esac
timeout 40 "$bin" --interop-dial "$js_addr" >"$work/a-c.out" 2>&1 || fail "A: our dialer failed"
wait "${pids[0]}" || fail "A: JS peer reported failure"
grep -q "^c ping status=0 " "$work/a-c.out" || fail "A: our ping of the JS peer failed"
grep -q "^c identify .*agent=js-libp2p/.*protocols=.*/ipfs/ping/1.0.0" "$work/a-c.out" ||
    fail "A: we did not identify the JS peer"
grep -q "^c served ping from js" "$work/a-c.out" || fail "A: the JS peer did not ping us"
grep -q "^js identify .*agent=meshllm/0.1 .*protocols=.*/ipfs/id/1.0.0" "$work/a-js.out" ||
    fail "A: the JS peer did not identify us"
grep -q "^js ping ok" "$work/a-js.out" || fail "A: the JS peer's ping of us failed"
grep -q "^c echo ok bytes=1048576" "$work/a-c.out" || fail "A: 1 MiB through the JS echo failed"
grep -q "^c push identify .*protocols=.*/meshllm/pushed/1" "$work/a-c.out" ||
    fail "A: the JS peer's identify push did not reach us"
echo "A ok: $(grep '^c ping' "$work/a-c.out"); $(grep '^js ping' "$work/a-js.out"); $(grep '^c echo' "$work/a-c.out")"

# ---- B: js dials us ----
timeout 40 "$bin" --interop-listen >"$work/b-c.out" 2>&1 &
pids+=($!)
wait_for "$work/b-c.out" "^c listening" || fail "B: our listener did not start"
c_addr=$(sed -n 's/^c listening //p' "$work/b-c.out" | head -1)
timeout 40 bash -c "cd '$dir' && exec node --import ./polyfill.mjs peer.mjs dial '$c_addr'" \
    >"$work/b-js.out" 2>&1 || fail "B: the JS dialer failed"
wait "${pids[1]}" || fail "B: our listener reported failure"
grep -q "^js ping ok" "$work/b-js.out" || fail "B: the JS peer's ping of us failed"
grep -q "^js identify .*agent=meshllm/0.1 " "$work/b-js.out" || fail "B: the JS peer did not identify us"
grep -q "^c identify .*agent=js-libp2p/" "$work/b-c.out" || fail "B: we did not identify the JS peer"
grep -q "^c ping status=0 " "$work/b-c.out" || fail "B: our ping back to the JS peer failed"
grep -q "^js echo ok bytes=1048576" "$work/b-js.out" || fail "B: 1 MiB through our echo failed"
grep -q "^js push ok" "$work/b-js.out" || fail "B: our identify push did not reach the JS peer"
echo "B ok: $(grep '^js ping' "$work/b-js.out"); $(grep '^c ping' "$work/b-c.out"); $(grep '^js echo' "$work/b-js.out")"
echo "interop ok"
