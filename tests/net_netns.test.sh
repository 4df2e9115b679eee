#!/usr/bin/env bash
# net_netns.test.sh - five `meshllm serve --p2p` processes, each in a network namespace this
# test makes (veth pairs on a bridge inside a sixth namespace, private 10.77.0.0/24 addresses
# that exist only inside the namespaces), listening on /ip4/0.0.0.0/tcp/4001 there:
#   1. with mDNS, no bootstrap and the default listen addresses, every node must find the four others by mDNS;
#   2. with --no-mdns and --bootstrap to node 0, every node must see the others through the
#      DHT, node 4 reaching node 0 only through tools/netproxy (40 ms each way, 5 % loss), so
#      its ping latency to node 0 is at least the 80 ms round trip the proxy adds.
# Prints a 'skipped' line and exits 0 when namespaces cannot be made (no privilege).
# Namespaces, processes and files are removed on exit (trap).
set -u
bin=${MESHLLM_BIN:-build/meshllm}
build=${MESHLLM_BUILD:-build}
proxy=$(dirname "$bin")/tools/netproxy
models=${MESHLLM_TEST_MODELS:-../shared/models}
model=$models/stories260K.gguf
N=5
tag="mlt$$"
hub="$tag-hub"
work=$(mktemp -d "${TMPDIR:-/tmp}/meshllm-netns-XXXXXX")
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
    for i in $(seq 0 $((N - 1))); do ip netns del "$tag-n$i" 2>/dev/null; done
    ip netns del "$hub" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
fail() {
    echo "FAIL: $*"
    for f in "$work"/*.log "$work"/*.peers; do [ -f "$f" ] && { echo "== $f"; tail -n 15 "$f"; }; done
    exit 1
}
[ -x "$proxy" ] || fail "$proxy not built (make all builds it)"

if ! ip netns add "$hub" 2>"$work/err"; then
    echo "skipped: cannot make network namespaces ($(head -c 200 "$work/err"))"
    exit 0
fi
ip -n "$hub" link add br0 type bridge || fail "bridge"
ip -n "$hub" link set br0 type bridge mcast_snooping 0 2>/dev/null
ip -n "$hub" link set br0 up
ip -n "$hub" link set lo up
for i in $(seq 0 $((N - 1))); do
    ns="$tag-n$i"
    ip netns add "$ns" || fail "netns add $ns"
    ip -n "$ns" link add eth0 type veth peer name "p$i" netns "$hub" || fail "veth $i"
    ip -n "$hub" link set "p$i" master br0
    ip -n "$hub" link set "p$i" up
    ip -n "$ns" addr add "10.77.0.$((10 + i))/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" link set lo up
    ip -n "$ns" route add 224.0.0.0/4 dev eth0 # the mDNS group
done

# start_node I PORT [serve args...]: node I in its namespace, API on 127.0.0.1:PORT there.
start_node() {
    local i=$1 port=$2
    shift 2
    MESHLLM_HOME="$work/home$i" ip netns exec "$tag-n$i" "$bin" serve --model "$model" \
        --port "$port" --threads 1 --slots 1 --p2p "$@" >"$work/$i-$port.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 100); do
        grep -q "web console at" "$work/$i-$port.log" && break
        kill -0 "${pids[-1]}" 2>/dev/null || fail "node $i exited"
        sleep 0.1
    done
    id[$i]=$(sed -n 's/^meshllm: peer ID //p' "$work/$i-$port.log")
    [ -n "${id[$i]}" ] || fail "node $i printed no peer ID"
}

# wait_all PORT HOW_REGEX: every node's `meshllm peers` lists the N-1 others as connected
# with a latency, found in a way matching HOW_REGEX; 30 s at most.
wait_all() {
    local port=$1 how=$2 ok=0
    for _ in $(seq 60); do
        ok=1
        for i in $(seq 0 $((N - 1))); do
            ip netns exec "$tag-n$i" "$bin" peers --url "http://127.0.0.1:$port" \
                >"$work/$i-$port.peers" 2>&1 || { ok=0; break; }
            for j in $(seq 0 $((N - 1))); do
                [ "$i" = "$j" ] && continue
                grep -qE "^${id[$j]} +($how) +connected +[0-9.]+ ms" "$work/$i-$port.peers" ||
                    { ok=0; break 2; }
            done
        done
        [ $ok = 1 ] && return 0
        sleep 0.5
    done
    return 1
}

# 1. mDNS only, default listen addresses (/ip4/0.0.0.0 and /ip6/:: port 4001). Node i finds
# the earlier nodes by mDNS; they see node i dial in.
for i in $(seq 0 $((N - 1))); do
    start_node "$i" 9337
done
grep -q "p2p listening on /ip4/10.77.0.10/tcp/4001/p2p/${id[0]}" "$work/0-9337.log" ||
    fail "node 0 did not print its 10.77.0.10 address"
wait_all 9337 "mdns|inbound" || fail "mDNS: not every node found the others"
grep -qE "^${id[0]} +mdns +connected" "$work/$((N - 1))-9337.peers" ||
    fail "the last node should have found node 0 by mDNS"
# Identify reports the address a peer reached us on, not the 0.0.0.0 we listen on.
grep -qE "^${id[0]} .* /ip4/10\.77\.0\.10/tcp/4001 " "$work/1-9337.peers" ||
    fail "node 1 should know node 0 at /ip4/10.77.0.10/tcp/4001"
for p in "${pids[@]}"; do kill "$p"; done
for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
pids=()

# 2. DHT bootstrap, no mDNS; node 4 reaches node 0 through the proxy (in node 4's namespace).
ip netns exec "$tag-n4" "$proxy" 127.0.0.1:0 10.77.0.10:4002 --delay-ms 40 --loss 5 --seed 7 \
    >"$work/proxy.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do grep -q listening "$work/proxy.log" && break; sleep 0.1; done
pport=$(sed -n 's/.*listening on 127.0.0.1:\([0-9]*\)$/\1/p' "$work/proxy.log")
[ -n "$pport" ] || fail "proxy did not start"
start_node 0 9338 --p2p-listen /ip4/0.0.0.0/tcp/4002 --no-mdns
boot="/ip4/10.77.0.10/tcp/4002/p2p/${id[0]}"
for i in $(seq 1 $((N - 2))); do
    start_node "$i" 9338 --p2p-listen /ip4/0.0.0.0/tcp/4002 --no-mdns --bootstrap "$boot"
done
start_node 4 9338 --p2p-listen /ip4/0.0.0.0/tcp/4002 --no-mdns \
    --bootstrap "/ip4/127.0.0.1/tcp/$pport/p2p/${id[0]}"
wait_all 9338 "bootstrap|dht|inbound" || fail "DHT: not every node sees the others"
grep -qE "^${id[0]} +bootstrap +connected" "$work/4-9338.peers" ||
    fail "node 4 should list node 0 as its bootstrap peer"
lat=$(grep -E "^${id[0]} " "$work/4-9338.peers" | grep -oE '[0-9.]+ ms' | head -1 | cut -d' ' -f1)
awk -v l="$lat" 'BEGIN { exit !(l >= 80) }' || fail "latency $lat ms through the proxy is < 80 ms"
echo "2 passed, 0 failed"
