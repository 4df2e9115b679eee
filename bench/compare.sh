#!/bin/sh
# compare.sh - meshllm vs llama.cpp on the same GGUF files, interleaved, with the memory
# read bandwidth measured beside every run.
#
# usage: bench/compare.sh [-B build-dir] [-L path/to/llama-bench] [-R rounds] [-t threads]
#                         [-m "q4_0 q8_0 q4_k_m"] [-b 1,8] [-d model-dir]
#
# Makes the random-weight TinyLlama-1.1B-shape models (bench/mkmodel) in the model dir
# (default /tmp) if absent. Each round, for each model: bench/bandwidth, then
# `meshllm bench -p 64 -n 32 -t T -r 1 -b LIST`, then (with -L) `llama-bench -p 64 -n 32
# -t T -r 1`. Prints the median over rounds of each number, the ratio ours / llama.cpp,
# and decode as a fraction of the bandwidth ceiling (median 2-thread GB/s / bytes per
# token, bytes per token = the weights meshllm reports minus the token embedding, which
# decode reads one row of), and each program's kernel path (meshllm: the CPU flags and the
# path it chose; llama.cpp: its CSV's backends and cpu_info). The llama-bench binary is
# built by you outside the repo.
set -eu

BUILD=build
LLAMA=
ROUNDS=3
THREADS=2
MODELS="q4_0 q8_0 q4_k_m"
BATCHES=1,8
DIR=/tmp
while getopts B:L:R:t:m:b:d: o; do
    case $o in
    B) BUILD=$OPTARG ;;
    L) LLAMA=$OPTARG ;;
    R) ROUNDS=$OPTARG ;;
    t) THREADS=$OPTARG ;;
    m) MODELS=$OPTARG ;;
    b) BATCHES=$OPTARG ;;
    d) DIR=$OPTARG ;;
    *) sed -n '4,6p' "$0" >&2; exit 2 ;;
    esac
done
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
VOCAB=${MESHLLM_TEST_MODELS:-$ROOT/../shared/models}/llamacpp-vocab/ggml-vocab-llama-spm.gguf
for bin in meshllm bench/mkmodel bench/bandwidth; do
    [ -x "$BUILD/$bin" ] || { echo "compare.sh: $BUILD/$bin missing (make BUILD=$BUILD)" >&2; exit 1; }
done
[ -z "$LLAMA" ] || [ -x "$LLAMA" ] || { echo "compare.sh: $LLAMA is not executable" >&2; exit 1; }

OUT=$(mktemp -d /tmp/meshllm-compare.XXXXXX)
trap 'rm -rf "$OUT"' EXIT

for m in $MODELS; do
    f=$DIR/tl-$m.gguf
    if [ ! -f "$f" ]; then
        t=$(echo "$m" | tr a-z A-Z)
        "$BUILD/bench/mkmodel" --shape tinyllama-1.1b --vocab "$VOCAB" --type "$t" -o "$f" >&2
    fi
done

# Raw samples: one line "model test who value" per measurement.
S=$OUT/samples
: > "$S"
r=1
while [ "$r" -le "$ROUNDS" ]; do
    for m in $MODELS; do
        f=$DIR/tl-$m.gguf
        echo "round $r/$ROUNDS $m" >&2
        "$BUILD/bench/bandwidth" 256 3 2>/dev/null |
            awk -v m="$m" '/threads=2/ { sub("median=", "", $4); print m, "bw2", "machine", $4 }' >> "$S"
        "$BUILD/meshllm" bench "$f" -p 64 -n 32 -t "$THREADS" -r 1 -b "$BATCHES" 2>/dev/null |
            tee "$OUT/ours.txt" | awk -F'|' -v m="$m" '$6 ~ /(pp|tg)[0-9]/ {
                gsub(/ /, "", $6); split($7, v, " "); print m, $6, "ours", v[1]
                if (!size) { split($3, z, " "); size = z[1]; print m, "size", "ours", size } }' >> "$S"
        if [ -n "$LLAMA" ]; then
            "$LLAMA" -m "$f" -p 64 -n 32 -t "$THREADS" -r 1 -o csv 2>/dev/null |
                tee "$OUT/llama.csv" | awk -F'","' -v m="$m" 'NR > 1 { np = $(NF-6); ng = $(NF-5); ts = $(NF-1)
                    if (np + 0 > 0) print m, "pp" np, "llama", ts; else print m, "tg" ng, "llama", ts }' >> "$S"
        fi
    done
    r=$((r + 1))
done

# Token-embedding bytes (decode reads one row of it): n_vocab x n_embd of the file's type.
embd_mib() {
    case $1 in
    q4_0) echo "32000 * 2048 * 18 / 32 / 1048576" ;;
    q8_0) echo "32000 * 2048 * 34 / 32 / 1048576" ;;
    q4_k_m) echo "32000 * 2048 * 144 / 256 / 1048576" ;;
    *) echo 0 ;;
    esac | bc -l
}

median() { sort -g | awk '{ a[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
get() { awk -v m="$1" -v t="$2" -v w="$3" '$1 == m && $2 == t && $3 == w { print $4 }' "$S" | median; }

echo
echo "rounds: $ROUNDS, threads: $THREADS, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "meshllm: $(grep -m1 '^cpu ' "$OUT/ours.txt" || echo '?')"
if [ -n "$LLAMA" ] && [ -s "$OUT/llama.csv" ]; then
    # llama-bench's own account of its path: the backends and CPU columns of its CSV
    echo "llama.cpp: $(awk -F'","' 'NR == 1 { for (i = 1; i <= NF; i++) { gsub(/"/, "", $i); k[$i] = i } }
        NR == 2 { gsub(/"/, ""); printf "backends %s, cpu %s", $k["backends"], $k["cpu_info"] }' "$OUT/llama.csv")"
fi
echo
echo "| model | test | meshllm t/s | llama.cpp t/s | ours / llama.cpp | bw GB/s (2 thr, median) | decode / ceiling (ours, llama.cpp) |"
echo "|---|---|---:|---:|---:|---:|---|"
for m in $MODELS; do
    bw=$(get "$m" bw2 machine)
    size=$(get "$m" size ours)
    tests=$(awk -v m="$m" '$1 == m && $3 == "ours" && $2 != "size" { print $2 }' "$S" | sort -u -V)
    for t in $tests; do
        o=$(get "$m" "$t" ours)
        l=$(get "$m" "$t" llama)
        ratio=-
        [ "$l" = "-" ] || ratio=$(echo "$o / $l" | bc -l | xargs printf '%.2f')
        frac=
        case $t in
        tg*x*) ;;
        tg*)
            if [ "$bw" != "-" ] && [ "$size" != "-" ]; then
                bpt=$(echo "($size - $(embd_mib "$m")) * 1048576" | bc -l)
                ceil=$(echo "$bw * 1000000000 / $bpt" | bc -l)
                frac=$(echo "$o / $ceil * 100" | bc -l | xargs printf '%.0f%%')
                [ "$l" = "-" ] || frac="$frac, $(echo "$l / $ceil * 100" | bc -l | xargs printf '%.0f%%')"
                frac="$frac of $(printf '%.1f' "$ceil") t/s"
            fi ;;
        esac
        echo "| $m | $t | $o | $l | $ratio | $bw | $frac |"
    done
done
echo
echo "raw samples (model test who value):" >&2
cat "$S" >&2
