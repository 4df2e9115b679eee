#!/usr/bin/env bash
# net_mdns_interop.test.sh - our mDNS discovery (net/mdns core on net/mdns_host) against
# js-libp2p's @libp2p/mdns, inside a network namespace this test makes (unshare -n: only "lo",
# with multicast on and a 224.0.0.0/4 route); the machine's own interfaces are never touched.
# Our node (test_mdns --interop) and a JS node (tests/interop/mdns.mjs) must each discover
# the other's peer ID and address. Needs root (CAP_SYS_ADMIN) for the namespace: without it
# the test says SKIP and passes; npm failures FAIL it.
set -u
root=$(cd "$(dirname "$0")/.." && pwd)
build=${MESHLLM_BUILD:-build}
bin=$root/$build/tests/test_mdns
dir=$root/tests/interop
work=$(mktemp -d "${TMPDIR:-/tmp}/meshllm-mdns-interop-XXXXXX")
cleanup() { rm -rf "$work"; }
trap cleanup EXIT
fail() {
    echo "FAIL: $*"
    for f in "$work"/*.out; do [ -f "$f" ] && { echo "--- $f"; cat "$f"; }; done
    exit 1
}

[ -x "$bin" ] || fail "$bin not built"
. "$dir/ensure_deps.sh"
ensure_interop_deps "$dir" "$work"
if ! unshare -n true 2>/dev/null; then
    echo "SKIP: cannot create a network namespace here (needs root); mDNS interop not run"
    exit 0
fi
command -v ip >/dev/null || fail "the ip command (iproute2) is needed inside the namespace"

export bin dir work
timeout 60 unshare -n bash -c '
    set -u
    ip link set lo up && ip link set lo multicast on && ip route add 224.0.0.0/4 dev lo ||
        exit 10
    "$bin" --interop >"$work/c.out" 2>&1 &
    cpid=$!
    for _ in $(seq 50); do grep -q "^c id " "$work/c.out" && break; sleep 0.1; done
    cid=$(sed -n "s/^c id //p" "$work/c.out")
    (cd "$dir" && exec node --import ./polyfill.mjs mdns.mjs "$cid") >"$work/js.out" 2>&1 &
    jspid=$!
    rc=0
    wait "$cpid" || rc=1
    wait "$jspid" || rc=$((rc + 2))
    exit $rc
'
rc=$?
[ $rc -eq 10 ] && fail "could not set up lo in the namespace"
cid=$(sed -n 's/^c id //p' "$work/c.out")
jsid=$(sed -n 's/^js id //p' "$work/js.out")
[ -n "$cid" ] && [ -n "$jsid" ] || fail "a node did not start"
grep -q "^c discovered $jsid /ip4/127.0.0.1/tcp/[0-9]*/p2p/$jsid" "$work/c.out" ||
    fail "we did not discover the JS node"
grep -q "^js discovered $cid /ip4/127.0.0.1/tcp/4001" "$work/js.out" ||
    fail "the JS node did not discover us"
[ $rc -eq 0 ] || fail "exit status $rc"
echo "mdns interop ok: each side discovered the other"
