#!/usr/bin/env bash
# net_dht_interop.test.sh - our Kademlia DHT (net/dht core on net/p2p + net/host) against
# js-libp2p's @libp2p/kad-dht, protocol /ipfs/kad/1.0.0, all on 127.0.0.1:
#   JS side (tests/interop/dht.mjs): nodes A and B; B joins through A, stores a signed
#   /meshllm record and provides a CID.
#   Our node joins through A, FIND_NODEs B, GET_VALUEs B's record (checking its signature),
#   GET_PROVIDERS finds B, then PUT_VALUEs its own record and ADD_PROVIDERs a CID; the JS
#   side reads that record, finds us as provider and finds our peer info.
# Installs the pinned npm packages first; if npm cannot, the test FAILS (never skips).
set -u
root=$(cd "$(dirname "$0")/.." && pwd)
build=${MESHLLM_BUILD:-build}
bin=$root/$build/tests/test_net_p2p
dir=$root/tests/interop
work=$(mktemp -d "${TMPDIR:-/tmp}/meshllm-dht-interop-XXXXXX")
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

(cd "$dir" && exec node --import ./polyfill.mjs dht.mjs) >"$work/js.out" 2>&1 &
jspid=$!
for _ in $(seq 300); do
    grep -q "^js ready" "$work/js.out" && break
    kill -0 "$jspid" 2>/dev/null || fail "JS DHT peers died"
    sleep 0.1
done
grep -q "^js ready" "$work/js.out" || fail "JS DHT peers did not start"
a_addr=$(sed -n 's/^js ready A=\([^ ]*\) B=.*/\1/p' "$work/js.out")
b_id=$(sed -n 's/^js ready .* B=\(.*\)$/\1/p' "$work/js.out")
case $a_addr in /ip4/127.0.0.1/tcp/*) ;; *) fail "JS address not on loopback: $a_addr" ;; esac
timeout 50 "$bin" --interop-dht "$a_addr" "$b_id" >"$work/c.out" 2>&1 || fail "our DHT node failed"
wait "$jspid" || fail "the JS side reported failure"
jspid=
for step in "c findnode ok" "c get ok" "c providers ok" "c put status=1" "c provide status=1"; do
    grep -q "^$step" "$work/c.out" || fail "missing: $step"
done
for step in "js get ok data=from-c" "js providers ok" "js findpeer ok" "js done ok"; do
    grep -q "^$step" "$work/js.out" || fail "missing: $step"
done
echo "dht interop ok: $(grep -c '^c .* ok' "$work/c.out") checks by us, $(grep -c '^js .*ok' "$work/js.out") by js-libp2p"
