#!/usr/bin/env bash
# autosplit_bench.sh - what --auto-split costs a user (issue 12), on 127.0.0.1.
#
# usage: bench/autosplit_bench.sh [-B build-dir] [-R rounds] [-n tokens] [-m model.gguf]
#
# Per round: a fresh mesh of two lite nodes started with `serve --accept-stages` (B, C; 1
# thread each, their own memory speed measured at start) and a requester
# `run MODEL --layers none --auto-split -v` that joins it: the first run's wall time from
# start to exit (joining, the members' loads of their ranges, the route, -n tokens), then
# a second run over the stages it finds (no load); their decode tokens/s (run -v, after the
# first token), against `run MODEL -n N -t 1` whole on one node. Medians over the rounds.
# Model: the random-weight TinyLlama-1.1B-shape Q4_0 file bench/split_bench.sh makes (-m to
# use another). Prints a Markdown table for bench/RESULTS.md. Not a network benchmark
# (loopback; bench/split_bench.sh measures RTT in namespaces).
set -u
BUILD=build
ROUNDS=3
NTOK=32
MODEL=
while getopts B:R:n:m: o; do
    case $o in
    B) BUILD=$OPTARG ;;
    R) ROUNDS=$OPTARG ;;
    n) NTOK=$OPTARG ;;
    m) MODEL=$OPTARG ;;
    *) sed -n '4p' "$0" >&2; exit 2 ;;
    esac
done
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$ROOT/$BUILD/meshllm
MODELS=${MESHLLM_TEST_MODELS:-$ROOT/../shared/models}
if [ -z "$MODEL" ]; then
    MODEL=/tmp/meshllm-bench-tl-q4_0.gguf
    [ -f "$MODEL" ] || "$ROOT/$BUILD/bench/mkmodel" --shape tinyllama-1.1b \
        --vocab "$MODELS/llamacpp-vocab/ggml-vocab-llama-spm.gguf" --type Q4_0 -o "$MODEL" >&2 ||
        { echo "autosplit_bench: mkmodel failed" >&2; exit 1; }
fi
work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
    rm -rf "$work"
}
trap cleanup EXIT
now() { date +%s.%N; }
median() { sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
start() { # NAME [args]
    local name=$1
    shift
    MESHLLM_LOG=info MESHLLM_HOME="$work/$name" "$BIN" serve --host 127.0.0.1 --port 0 --threads 1 \
        --slots 1 --p2p-listen /ip4/127.0.0.1/tcp/0 --no-mdns "$@" >"$work/$name.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 200); do grep -q "API at" "$work/$name.log" && break; sleep 0.05; done
}
tps() { sed -n 's/.*generation: .*(\([0-9.]*\) tok\/s.*/\1/p' "$1" | tail -1; }
prompt="Once upon a time"
for r in $(seq "$ROUNDS"); do
    rm -rf "$work"/B* "$work"/C* "$work"/R*
    MESHLLM_HOME="$work/B$r" "$BIN" mesh create >/dev/null 2>&1
    start "B$r" --accept-stages
    addr=$(sed -n 's/^meshllm: p2p listening on //p' "$work/B$r.log" | head -1)
    inv() { MESHLLM_HOME="$work/B$r" "$BIN" invite --addr "$addr"; }
    start "C$r" --accept-stages --join "$(inv)"
    t0=$(now)
    MESHLLM_HOME="$work/R$r" "$BIN" run "$MODEL" "$prompt" --temp 0 -n "$NTOK" -t 1 --layers none \
        --auto-split --join "$(inv)" --p2p-listen /ip4/127.0.0.1/tcp/0 --no-mdns --route-wait 300 -v \
        >/dev/null 2>"$work/first$r.err" || { echo "round $r: first run failed" >&2; tail "$work/first$r.err" >&2; exit 1; }
    t1=$(now)
    echo "$t1 - $t0" | bc >>"$work/first.txt"
    tps "$work/first$r.err" >>"$work/first_tps.txt"
    grep -h "asking" "$work/first$r.err" | sed 's/.*asking [^ ]*/asking/' >>"$work/split.txt"
    t0=$(now)
    MESHLLM_HOME="$work/R$r" "$BIN" run "$MODEL" "$prompt" --temp 0 -n "$NTOK" -t 1 --layers none \
        --auto-split --p2p-listen /ip4/127.0.0.1/tcp/0 --no-mdns --route-wait 60 -v \
        >/dev/null 2>"$work/second$r.err" || { echo "round $r: second run failed" >&2; exit 1; }
    t1=$(now)
    echo "$t1 - $t0" | bc >>"$work/second.txt"
    tps "$work/second$r.err" >>"$work/second_tps.txt"
    "$BIN" run "$MODEL" "$prompt" --temp 0 -n "$NTOK" -t 1 -v >/dev/null 2>"$work/whole$r.err"
    tps "$work/whole$r.err" >>"$work/whole_tps.txt"
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
    pids=()
done
echo "model: $(basename "$MODEL"), $ROUNDS rounds, -n $NTOK, medians"
sort -u "$work/split.txt" | sed 's/^/- /'
echo
echo "| first run (load + route + $NTOK tokens), s | second run (stages loaded), s | split decode tok/s | whole-model decode tok/s (1 thread) |"
echo "|---|---|---|---|"
echo "| $(median <"$work/first.txt") | $(median <"$work/second.txt") | $(median <"$work/second_tps.txt") | $(median <"$work/whole_tps.txt") |"
