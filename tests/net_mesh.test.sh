#!/usr/bin/env bash
# net_mesh.test.sh - five `meshllm serve --p2p` processes on 127.0.0.1 (never 0.0.0.0, no
# mDNS): the first starts alone, the others bootstrap from it; `meshllm peers` on every node
# must then list the four others as connected (found through the DHT), with their protocols
# and a ping latency. Also: without --p2p no peer port is opened and `peers` says so; misuse
# of the p2p flags exits 2. Every process is stopped on exit (trap).
set -u
bin=${MESHLLM_BIN:-build/meshllm}
models=${MESHLLM_TEST_MODELS:-../shared/models}
model=$models/stories260K.gguf
work=$(mktemp -d "${TMPDIR:-/tmp}/meshllm-mesh-XXXXXX")
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
    rm -rf "$work"
}
trap cleanup EXIT
fail() {
    echo "FAIL: $*"
    for f in "$work"/*.log "$work"/*.peers; do [ -f "$f" ] && { echo "== $f"; tail -n 20 "$f"; }; done
    exit 1
}
N=5

# start_node I [serve args...]: starts node I, waits for its ports, sets url[I], id[I], addr[I].
start_node() {
    local i=$1
    shift
    MESHLLM_HOME="$work/home$i" "$bin" serve --model "$model" --port 0 --threads 1 --slots 1 \
        "$@" >"$work/$i.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 100); do
        grep -q "web console at" "$work/$i.log" && break
        kill -0 "${pids[-1]}" 2>/dev/null || fail "node $i exited"
        sleep 0.1
    done
    url[$i]=$(sed -n 's|.*web console at \(http://[^ ]*\)/$|\1|p' "$work/$i.log")
    id[$i]=$(sed -n 's/^meshllm: peer ID //p' "$work/$i.log")
    addr[$i]=$(sed -n 's/^meshllm: p2p listening on //p' "$work/$i.log" | head -1)
    [ -n "${url[$i]}" ] || fail "node $i printed no console URL"
}

# Misuse.
"$bin" serve --model "$model" --p2p-listen /ip4/127.0.0.1/tcp/0 >/dev/null 2>&1
[ $? = 2 ] || fail "--p2p-listen without --p2p must exit 2"
"$bin" serve --model "$model" --p2p --bootstrap /ip4/127.0.0.1/tcp/1 >/dev/null 2>"$work/err"
[ $? = 2 ] || fail "--bootstrap without /p2p must exit 2"
grep -q "/p2p/" "$work/err" || fail "no actionable message for a bootstrap without /p2p"
"$bin" serve --model "$model" --p2p --p2p-listen /ip4/1.2.3/tcp/1 >/dev/null 2>&1
[ $? = 2 ] || fail "a malformed multiaddr must exit 2"

"$bin" peers --url http://127.0.0.1:1 >/dev/null 2>"$work/err"
[ $? = 1 ] || fail "peers against no server must exit 1"
grep -q "meshllm serve" "$work/err" || fail "peers: no hint when nothing listens"
"$bin" peers --bogus >/dev/null 2>&1
[ $? = 2 ] || fail "peers misuse must exit 2"

# Local-only stays the default: no peer ID, no p2p port, peers says p2p is off.
start_node 9
grep -q "p2p listening\|peer ID" "$work/9.log" && fail "serve without --p2p started the host"
"$bin" peers --url "${url[9]}" >"$work/9.peers" || fail "peers against a local-only node"
grep -q "peer-to-peer is off" "$work/9.peers" || fail "peers did not say p2p is off"

# The mesh.
start_node 0 --p2p --p2p-listen /ip4/127.0.0.1/tcp/0 --no-mdns
[[ ${id[0]} =~ ^12D3KooW ]] || fail "node 0 printed no peer ID"
[[ ${addr[0]} =~ ^/ip4/127\.0\.0\.1/tcp/[0-9]+/p2p/12D3KooW ]] || fail "bad address '${addr[0]}'"
for i in $(seq 1 $((N - 1))); do
    start_node "$i" --p2p --p2p-listen /ip4/127.0.0.1/tcp/0 --no-mdns --bootstrap "${addr[0]}"
done
# `meshllm id` on the same data dir prints the same peer ID as the running node.
[ "$(MESHLLM_HOME="$work/home1" "$bin" id)" = "${id[1]}" ] || fail "id disagrees with serve"

# Every node must see the N-1 others connected, with a latency; 20 s at most.
ok=0
for _ in $(seq 100); do
    ok=1
    for i in $(seq 0 $((N - 1))); do
        "$bin" peers --url "${url[$i]}" >"$work/$i.peers" 2>&1 || { ok=0; break; }
        for j in $(seq 0 $((N - 1))); do
            [ "$i" = "$j" ] && continue
            grep -E "^${id[$j]} .* connected +[0-9.]+ ms .*/meshllm/kad/1\.0\.0" "$work/$i.peers" \
                >/dev/null || { ok=0; break 2; }
        done
    done
    [ $ok = 1 ] && break
    sleep 0.2
done
[ $ok = 1 ] || fail "not every node sees the others"
# How they were found: node 0 was dialed by everyone; the others name node 0 as bootstrap.
for j in $(seq 1 $((N - 1))); do
    grep -qE "^${id[$j]} +inbound " "$work/0.peers" || fail "node 0 should list node $j as inbound"
done
grep -qE "^${id[0]} +bootstrap " "$work/2.peers" || fail "node 2 should list node 0 as bootstrap"
cat "$work"/[1-9].peers | grep -qE "^12D3KooW[^ ]+ +dht +connected" ||
    fail "no node lists a peer found through the DHT"
"$bin" peers --url "${url[0]}" --json | grep -q "\"table_size\":$((N - 1))" ||
    fail "node 0's routing table should hold $((N - 1)) peers"
echo "1 passed, 0 failed"
