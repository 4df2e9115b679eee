#!/usr/bin/env bash
# net_flood.test.sh - a real `meshllm serve --p2p` under hostile traffic (issue 11), end to
# end: bench/soak_junk holds idle sockets on its p2p port (more than the pending budget),
# churns sybil identities and floods ADD_PROVIDER records from one identity, while
#   - a fresh node bootstraps through it and is listed by /node/peers,
#   - a steady client's completions keep succeeding,
#   - /metrics counts the refusals by reason (pending per IP, provider quota),
#   - the node is alive afterwards with its fd count back near where it started.
# Prints "N passed, N failed".
set -u
root=$(cd "$(dirname "$0")/.." && pwd)
build=${MESHLLM_BUILD:-build}
bin=${MESHLLM_BIN:-$root/$build/meshllm}
junk=$root/$build/bench/soak_junk
models=${MESHLLM_TEST_MODELS:-$root/../shared/models}
model=$models/stories260K.gguf
work=$(mktemp -d "${TMPDIR:-/tmp}/meshllm-flood-XXXXXX")
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null; done
    wait 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
passed=0
failed=0
check() { # description, then a command that must succeed
    local what=$1
    shift
    if "$@"; then passed=$((passed + 1)); else failed=$((failed + 1)); echo "FAIL: $what"; fi
}
[ -x "$junk" ] || { echo "net_flood: $junk missing"; echo "0 passed, 1 failed"; exit 1; }

# start NAME ARGS...: a serve node; sets url_NAME addr_NAME id_NAME pid_NAME
start() {
    local name=$1 port="" i
    shift
    MESHLLM_HOME="$work/$name" "$bin" serve --model "$model" --host 127.0.0.1 --port 0 \
        --threads 1 --slots 2 --p2p --p2p-listen /ip4/127.0.0.1/tcp/0 --no-mdns "$@" \
        >"$work/$name.log" 2>&1 &
    local pid=$!
    pids+=("$pid")
    for i in $(seq 400); do
        port=$(grep -oE 'API at http://127\.0\.0\.1:[0-9]+' "$work/$name.log" | grep -oE '[0-9]+$' | head -1)
        [ -n "$port" ] && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    printf -v "url_$name" 'http://127.0.0.1:%s' "$port"
    printf -v "pid_$name" '%s' "$pid"
    printf -v "id_$name" '%s' "$(sed -n 's/^meshllm: peer ID //p' "$work/$name.log" | tail -1)"
    printf -v "addr_$name" '%s' "$(sed -n 's/^meshllm: p2p listening on //p' "$work/$name.log" | tail -1)"
}
metric() { # URL NAME{LABELS}: the value, 0 if absent
    curl -s -m 5 "$1/metrics" | awk -v k="$2" '$1 == k {print $2; f = 1} END {if (!f) print 0}'
}
body='{"model":"stories260K","prompt":"Once upon a time","max_tokens":8,"temperature":0}'
complete() { # URL: the HTTP status of one completion
    curl -s -o /dev/null -m 10 -w '%{http_code}' -H 'Content-Type: application/json' -d "$body" "$1/v1/completions"
}

start T
check "node T started" test -n "$addr_T"
fds0=$(ls "/proc/$pid_T/fd" | wc -l)
"$junk" --p2p "$addr_T" --from 127.0.0.2 --seconds 8 --idle 200 --sybil-per-s 20 --provide-per-s 1000 \
    --slowloris 0 >"$work/junk.out" 2>&1 &
jpid=$!
pids+=("$jpid")
sleep 2 # the budget is full of idle sockets by now

start F --bootstrap "$addr_T"
listed=no
for i in $(seq 40); do
    if curl -s -m 2 "$url_T/node/peers" | grep -q "$id_F"; then listed=yes; break; fi
    sleep 0.25
done
check "a fresh node bootstraps through T while the flood runs" test "$listed" = yes
ok=0
for i in 1 2 3 4 5; do [ "$(complete "$url_T")" = 200 ] && ok=$((ok + 1)); done
check "completions succeed during the flood ($ok of 5)" test "$ok" = 5
wait "$jpid"
sleep 1.5 # the loop thread's counters refresh every second
cat "$work/junk.out" >&2
per_ip=$(metric "$url_T" 'meshllm_p2p_refused_total{reason="pending_per_ip"}')
check "/metrics counts idle sockets refused per IP ($per_ip)" test "${per_ip:-0}" -gt 0
quota=$(metric "$url_T" 'meshllm_p2p_refused_total{reason="provider_quota"}')
check "/metrics counts provider records over the quota ($quota)" test "${quota:-0}" -gt 0
recs=$(metric "$url_T" 'meshllm_p2p_table_entries{table="dht_provider_records"}')
check "the flooder holds at most its quota of provider records ($recs)" test "${recs:-0}" -le 256
sybils=$(grep -oE 'sybil_ok=[0-9]+' "$work/junk.out" | tail -1 | cut -d= -f2)
check "sybil identities still connect one by one (${sybils:-0})" test "${sybils:-0}" -gt 20
check "node T is alive" kill -0 "$pid_T"
check "T still answers after the flood" test "$(complete "$url_T")" = 200
sleep 6 # idle sockets past the 5 s handshake deadline are gone
fds1=$(ls "/proc/$pid_T/fd" | wc -l)
check "T's descriptors are back near the start ($fds0 -> $fds1)" test "$fds1" -le $((fds0 + 8))
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
