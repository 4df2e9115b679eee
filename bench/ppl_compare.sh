#!/usr/bin/env bash
# ppl_compare.sh - perplexity and KL divergence of every weight type `meshllm quantize` makes
# and of every KV cache type, ours beside llama-perplexity's, as a markdown table
# (bench/RESULTS.md, issue 15).
#
#   bench/ppl_compare.sh MODEL.gguf TEXT.txt [CTX] [TYPES...]
#
# MODEL holds F32/F16/BF16 weights (the KL base). CTX defaults to 128; TYPES to
# Q8_0 Q6_K Q5_1 Q5_0 Q4_K_M Q4_1 Q4_0. llama-perplexity comes from $LLAMA_PERPLEXITY or
# /work/ref/llama.cpp/build/bin/llama-perplexity (its columns say "-" without it); it runs
# with one sequence per batch (-b CTX) and flash attention for the cache types it allows.
# Threads: $THREADS (default 2).
set -u
model=${1:?usage: ppl_compare.sh MODEL.gguf TEXT.txt [CTX] [TYPES...]}
text=${2:?usage: ppl_compare.sh MODEL.gguf TEXT.txt [CTX] [TYPES...]}
ctx=${3:-128}
shift $(($# < 3 ? $# : 3))
types=${*:-Q8_0 Q6_K Q5_1 Q5_0 Q4_K_M Q4_1 Q4_0}
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${MESHLLM_BIN:-$root/build/meshllm}
lp=${LLAMA_PERPLEXITY:-/work/ref/llama.cpp/build/bin/llama-perplexity}
t=${THREADS:-2}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

ours() { # file out [args] -> PPL; stats in out
    local f=$1 o=$2
    shift 2
    "$bin" perplexity "$f" "$text" --ctx "$ctx" -t "$t" "$@" >"$o" 2>/dev/null
    sed -n 's/^Final estimate: PPL = \([0-9.]*\) .*/\1/p' "$o"
}
theirs() { # file [args] -> PPL or -
    [ -x "$lp" ] || { echo -; return; }
    local v
    v=$("$lp" -m "$1" -f "$text" -c "$ctx" -b "$ctx" -t "$t" "${@:2}" 2>&1 |
        sed -n 's/.*Final estimate: PPL = \([0-9.]*\) .*/\1/p')
    echo "${v:--}"
}
stat() { sed -n "s/^$2 *\([0-9.]*\).*/\1/p" "$1"; }
ratio() { [ "$2" = - ] && echo - || awk -v a="$1" -v b="$2" 'BEGIN { printf "%.4f", a / b }'; }

echo "ctx $ctx, $(basename "$text"), $(date -u '+%Y-%m-%d %H:%M UTC'), load average $(cut -d' ' -f1 /proc/loadavg)"
echo
echo "| weights | ours PPL | llama-perplexity | ours / llama | mean KLD | 99 % KLD | same top-1 |"
echo "|---|---|---|---|---|---|---|"
base_ppl=$(ours "$model" "$tmp/base")
base_lp=$(theirs "$model")
echo "| base | $base_ppl | $base_lp | $(ratio "$base_ppl" "$base_lp") | - | - | - |"
for ty in $types; do
    "$bin" quantize "$model" "$tmp/$ty.gguf" "$ty" >/dev/null 2>&1 || { echo "| $ty | quantize failed | | | | | |"; continue; }
    p=$(ours "$tmp/$ty.gguf" "$tmp/$ty.out" --kl-base "$model")
    l=$(theirs "$tmp/$ty.gguf")
    echo "| $ty | $p | $l | $(ratio "$p" "$l") | $(stat "$tmp/$ty.out" 'Mean    KLD:') | $(stat "$tmp/$ty.out" '99.0%   KLD:') | $(stat "$tmp/$ty.out" 'Same top p:') % |"
done
echo
echo "| KV cache | ours PPL | llama-perplexity (-fa) | ours / llama | mean KLD vs f16 | same top-1 |"
echo "|---|---|---|---|---|---|"
for kv in f16 q8_0 q4_0; do
    p=$(ours "$model" "$tmp/kv-$kv" --kv-type "$kv" --kl-base "$model")
    l=$(theirs "$model" -fa -ctk "$kv" -ctv "$kv")
    echo "| $kv | $p | $l | $(ratio "$p" "$l") | $(stat "$tmp/kv-$kv" 'Mean    KLD:') | $(stat "$tmp/kv-$kv" 'Same top p:') % |"
done
