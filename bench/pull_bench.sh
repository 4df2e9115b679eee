#!/usr/bin/env bash
# pull_bench.sh - a loopback mesh pull (issue 13): MiB/s of `meshllm pull NAME` of a ~600 MiB
# generated GGUF from 1, 2 and 3 providers, against plain `cp` of the same file (the local
# ceiling) and the Merkle check alone (bench/bench_merkle). Every file is in the page cache
# (the file was just written), so this measures the protocol, crypto and hashing, not a disk.
#
#   bench/pull_bench.sh [RUNS]      (default 3 runs of each; BUILD=build; LAYERS=22: the
#                                    file size, 22 layers = 598 MiB)
#
# Real `meshllm serve --p2p` processes on 127.0.0.1: P1 creates a mesh, P2, P3 and the puller
# A join it; the providers get the file in their stores one at a time (1, then 2, then 3
# providers). Generated files and stores live in a temp dir, deleted at the end.
set -u
RUNS=${1:-3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BUILD:-build}
BIN=$ROOT/$BUILD/meshllm
MODELS=${MESHLLM_TEST_MODELS:-$ROOT/../shared/models}
W=$(mktemp -d "${TMPDIR:-/tmp}/meshllm-pullbench-XXXXXX")
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
    rm -rf "$W"
}
trap cleanup EXIT
die() { echo "pull_bench: $*" >&2; exit 1; }
export no_proxy=127.0.0.1,localhost NO_PROXY=127.0.0.1,localhost
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY ALL_PROXY all_proxy
for b in "$BIN" "$ROOT/$BUILD/bench/mkmodel" "$ROOT/$BUILD/bench/bench_merkle"; do
    [ -x "$b" ] || die "$b missing: make -j2 all"
done
median() { sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }
mibs() { awk -v b="$1" -v t="$2" 'BEGIN {printf "%.0f", b / 1048576 / t}'; }

F=$W/big.gguf
"$ROOT/$BUILD/bench/mkmodel" --arch llama --dim 1024 --layers "${LAYERS:-22}" --heads 16 --kv-heads 4 \
    --ff 2816 --vocab "$MODELS/llamacpp-vocab/ggml-vocab-llama-spm.gguf" --type F16 -o "$F" \
    >/dev/null 2>&1 || die "mkmodel failed"
SIZE=$(stat -c %s "$F")
echo "file: $SIZE bytes ($((SIZE >> 20)) MiB)"

cp_rates=()
for r in $(seq "$RUNS"); do
    t0=$(date +%s.%N)
    cp "$F" "$W/copy.gguf"
    t1=$(date +%s.%N)
    cp_rates+=("$(mibs "$SIZE" "$(echo "$t1 - $t0" | bc)")")
    rm -f "$W/copy.gguf"
done
echo "cp: $(printf '%s\n' "${cp_rates[@]}" | median) MiB/s (runs: ${cp_rates[*]})"
"$ROOT/$BUILD/bench/bench_merkle" "$F" --runs "$RUNS"

node() {
    local name=$1
    shift
    MESHLLM_LOG=info MESHLLM_HOME="$W/$name" MESHLLM_MODELS="$W/$name/models" "$BIN" serve \
        --host 127.0.0.1 --port 0 --threads 1 --p2p --p2p-listen /ip4/127.0.0.1/tcp/0 \
        --no-mdns "$@" >"$W/$name.log" 2>&1 &
    PIDS+=($!)
    printf -v "pid_$name" '%s' "$!"
    local port="" i
    for i in $(seq 200); do
        port=$(grep -oE 'API at http://127\.0\.0\.1:[0-9]+' "$W/$name.log" | grep -oE '[0-9]+$' | head -1)
        [ -n "$port" ] && break
        sleep 0.05
    done
    [ -n "$port" ] || die "$name did not start: $(tail -3 "$W/$name.log")"
    printf -v "url_$name" 'http://127.0.0.1:%s' "$port"
    printf -v "addr_$name" '%s' "$(sed -n 's/^meshllm: p2p listening on //p' "$W/$name.log" | head -1)"
}
MESHLLM_HOME="$W/P1" "$BIN" mesh create >/dev/null 2>&1 || die "mesh create"
node P1
for n in P2 P3 A; do
    MESHLLM_HOME="$W/$n" "$BIN" join "$(MESHLLM_HOME="$W/P1" "$BIN" invite --addr "$addr_P1")" \
        >/dev/null 2>&1 || die "join $n"
    node "$n" --bootstrap "$addr_P1"
done
n_providers() {
    curl -s "$url_A/node/peers" | python3 -c '
import json, sys
j = json.load(sys.stdin)
print(sum(1 for p in j["mesh"]["peers"] if p["member"] and p["announced"] and any(b["name"] == "big:latest" for b in p.get("blobs", []))))'
}
for k in 1 2 3; do
    u="url_P$k"
    curl -s -H 'Content-Type: application/json' "${!u}/api/create" \
        -d "{\"model\":\"big\",\"from\":\"$F\",\"stream\":false}" | grep -q success || die "create on P$k"
    for i in $(seq 150); do [ "$(n_providers)" = "$k" ] && break; sleep 0.2; done
    [ "$(n_providers)" = "$k" ] || die "A does not see $k providers"
    rates=()
    fetch=()
    for r in $(seq "$RUNS"); do
        [ -n "${PERF:-}" ] && { perf record -g -o "$PERF.$k" -p "$pid_A" >/dev/null 2>&1 & perf_pid=$!; sleep 0.5; }
        t0=$(date +%s.%N)
        "$BIN" pull big --url "$url_A" -q >/dev/null || die "pull from $k failed"
        t1=$(date +%s.%N)
        [ -n "${PERF:-}" ] && { kill -INT "$perf_pid"; wait "$perf_pid"; }
        fetch+=("$(grep -oE 'fetched and verified in [0-9.]+ s, [0-9]+ MiB/s' "$W/A.log" | tail -1 | grep -oE '[0-9]+ MiB/s' | grep -oE '[0-9]+')")
        cid=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["content_id"])' \
            "$W/A/models/manifests/big:latest.json")
        cmp -s "$F" "$W/A/models/blobs/$cid" || die "the pulled file differs"
        rates+=("$(mibs "$SIZE" "$(echo "$t1 - $t0" | bc)")")
        curl -s -X DELETE -H 'Content-Type: application/json' "$url_A/api/delete" \
            -d '{"model":"big"}' >/dev/null
    done
    echo "pull from $k provider(s): $(printf '%s\n' "${rates[@]}" | median) MiB/s (runs: ${rates[*]}); fetched and verified before fsync: $(printf '%s\n' "${fetch[@]}" | median) MiB/s (runs: ${fetch[*]})"
done
