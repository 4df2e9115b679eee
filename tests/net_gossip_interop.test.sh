#!/usr/bin/env bash
# net_gossip_interop.test.sh - our GossipSub (net/gossip core on net/gossip_host + net/host)
# against js-libp2p's @libp2p/gossipsub, on 127.0.0.1 only, both directions:
#   A: the JS peer (tests/interop/gossip.mjs) listens, our node (test_gossip --interop-dial)
#      dials it;
#   B: our node (test_gossip --interop-listen) listens, the JS peer dials it.
# Both sides subscribe to /meshllm/interop/1 and publish signed messages until each has
# received the other's: StrictSign signatures, message ids, SUBSCRIBE/GRAFT and RPC framing
# interoperate. Installs the pinned npm packages first; if npm cannot, the test FAILS.
set -u
root=$(cd "$(dirname "$0")/.." && pwd)
build=${MESHLLM_BUILD:-build}
bin=$root/$build/tests/test_gossip
dir=$root/tests/interop
work=$(mktemp -d "${TMPDIR:-/tmp}/meshllm-gossip-interop-XXXXXX")
jspid=
cpid=
cleanup() {
    [ -n "$jspid" ] && kill "$jspid" 2>/dev/null
    [ -n "$cpid" ] && kill "$cpid" 2>/dev/null
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

# ---- A: we dial js ----
(cd "$dir" && exec node --import ./polyfill.mjs gossip.mjs) >"$work/a-js.out" 2>&1 &
jspid=$!
for _ in $(seq 300); do
    grep -q "^js listening /" "$work/a-js.out" && break
    kill -0 "$jspid" 2>/dev/null || fail "A: JS gossip peer died"
    sleep 0.1
done
js_addr=$(sed -n 's/^js listening //p' "$work/a-js.out" | head -1)
case $js_addr in /ip4/127.0.0.1/tcp/*) ;; *) fail "A: JS address not on loopback: '$js_addr'" ;; esac
timeout 45 "$bin" --interop-dial "$js_addr" >"$work/a-c.out" 2>&1 || fail "A: our gossip node failed"
wait "$jspid" || fail "A: the JS side reported failure"
jspid=
grep -q "^c got from-js " "$work/a-c.out" || fail "A: we did not receive the JS peer's message"
grep -q "^js got from-c " "$work/a-js.out" || fail "A: the JS peer did not receive our message"

# ---- B: js dials us ----
timeout 45 "$bin" --interop-listen >"$work/b-c.out" 2>&1 &
cpid=$!
for _ in $(seq 100); do
    grep -q "^c listening /" "$work/b-c.out" && break
    kill -0 "$cpid" 2>/dev/null || fail "B: our gossip node died"
    sleep 0.1
done
c_addr=$(sed -n 's/^c listening //p' "$work/b-c.out" | head -1)
case $c_addr in /ip4/127.0.0.1/tcp/*) ;; *) fail "B: our address not on loopback: '$c_addr'" ;; esac
(cd "$dir" && exec node --import ./polyfill.mjs gossip.mjs dial "$c_addr") >"$work/b-js.out" 2>&1 &
jspid=$!
wait "$cpid" || fail "B: our gossip node failed"
cpid=
wait "$jspid" || fail "B: the JS side reported failure"
jspid=
grep -q "^c got from-js " "$work/b-c.out" || fail "B: we did not receive the JS peer's message"
grep -q "^js got from-c " "$work/b-js.out" || fail "B: the JS peer did not receive our message"
echo "gossip interop ok: signed messages delivered both ways, both dial directions" \
    "(A: $(grep '^c mesh' "$work/a-c.out"), B: $(grep '^c mesh' "$work/b-c.out"))"
