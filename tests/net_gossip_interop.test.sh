#!/usr/bin/env bash
# net_gossip_interop.test.sh - our GossipSub (net/gossip core on net/gossip_host + net/host)
# against js-libp2p's @libp2p/gossipsub, on 127.0.0.1 only: the JS peer
# (tests/interop/gossip.mjs) listens, our node (test_gossip --interop-dial) dials it; both
# subscribe to /meshllm/interop/1 and publish signed messages until each has received the
# other's: StrictSign signatures, message ids, SUBSCRIBE/GRAFT and RPC framing interoperate
# both ways. Installs the pinned npm packages first; if npm cannot, the test FAILS.
set -u
root=$(cd "$(dirname "$0")/.." && pwd)
build=${MESHLLM_BUILD:-build}
bin=$root/$build/tests/test_gossip
dir=$root/tests/interop
work=$(mktemp -d "${TMPDIR:-/tmp}/meshllm-gossip-interop-XXXXXX")
jspid=
cleanup() {
    [ -n "$jspid" ] && kill "$jspid" 2>/dev/null
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

(cd "$dir" && exec node --import ./polyfill.mjs gossip.mjs) >"$work/js.out" 2>&1 &
jspid=$!
for _ in $(seq 300); do
    grep -q "^js listening /" "$work/js.out" && break
    kill -0 "$jspid" 2>/dev/null || fail "JS gossip peer died"
    sleep 0.1
done
js_addr=$(sed -n 's/^js listening //p' "$work/js.out" | head -1)
case $js_addr in /ip4/127.0.0.1/tcp/*) ;; *) fail "JS address not on loopback: '$js_addr'" ;; esac
timeout 45 "$bin" --interop-dial "$js_addr" >"$work/c.out" 2>&1 || fail "our gossip node failed"
wait "$jspid" || fail "the JS side reported failure"
jspid=
grep -q "^c got from-js " "$work/c.out" || fail "we did not receive the JS peer's message"
grep -q "^js got from-c " "$work/js.out" || fail "the JS peer did not receive our message"
grep -q "^js done ok" "$work/js.out" || fail "the JS side did not finish"
echo "gossip interop ok: signed messages delivered both ways ($(grep '^c mesh' "$work/c.out"))"
