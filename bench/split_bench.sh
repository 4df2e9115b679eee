#!/usr/bin/env bash
# split_bench.sh - a split model over three stages in network namespaces (issue 12).
#
# usage: bench/split_bench.sh [-B build-dir] [-R rounds] [-n tokens] [-m model.gguf] [RTT_MS...]
#
# Namespaces made here: R (the requester, `serve --layers none`), B, C, D (the stages, each
# `serve --layers` a third of the model) and a hub. Each node's only link is a veth to the
# hub, in a subnet of its own; the hub does not forward, so every byte between nodes goes
# through a tools/netproxy in the hub that adds RTT/2 each way (default RTTs 0 5 20 ms).
# Per RTT, R R rounds of:
#   - one session's streamed greedy decode (-n tokens, default 64): tokens/s, against the
#     bound 1 / (compute + hops x RTT), where compute is the same model's decode time per
#     token on one node (measured in R's namespace, 1 thread, side by side) and hops = 3
#     (R talks to each stage: a star);
#   - the same with n-gram speculative decoding on a prompt that repeats itself (R started
#     again with --spec ngram), against the same bound;
#   - 4 concurrent sessions: aggregate tokens/s against 4 x one session;
#   - bytes on the wire per token: R's /metrics pipeline byte counters over the decode.
# Model: a random-weight TinyLlama-1.1B-shape Q4_0 file made once with bench/mkmodel (-m to
# use another). Every node runs 1 thread. Prints Markdown tables for bench/RESULTS.md.
# Needs root (ip netns); everything made is removed on exit.
set -u
BUILD=build
ROUNDS=3
NTOK=64
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
shift $((OPTIND - 1))
RTTS=${*:-0 5 20}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
BIN=$ROOT/$BUILD/meshllm
PROXY=$ROOT/$BUILD/tools/netproxy
MODELS=${MESHLLM_TEST_MODELS:-$ROOT/../shared/models}
for b in "$BIN" "$PROXY" "$ROOT/$BUILD/bench/mkmodel"; do
    [ -x "$b" ] || { echo "split_bench: $b missing (make BUILD=$BUILD)" >&2; exit 1; }
done
if [ -z "$MODEL" ]; then
    MODEL=/tmp/meshllm-bench-tl-q4_0.gguf
    [ -f "$MODEL" ] || "$ROOT/$BUILD/bench/mkmodel" --shape tinyllama-1.1b \
        --vocab "$MODELS/llamacpp-vocab/ggml-vocab-llama-spm.gguf" --type Q4_0 -o "$MODEL" >&2 ||
        { echo "split_bench: mkmodel failed" >&2; exit 1; }
fi
MNAME=$(basename "$MODEL" .gguf)
NL=$("$BIN" info "$MODEL" 2>/dev/null | sed -n 's/^ *layers: *\([0-9]*\).*/\1/p' | head -1)
NL=${NL:-22}
A1=$((NL / 3)) A2=$((2 * NL / 3))
RANGE_B="0-$((A1 - 1))" RANGE_C="$A1-$((A2 - 1))" RANGE_D="$A2-$((NL - 1))"

tag="msb$$"
W=$(mktemp -d /tmp/meshllm-splitbench.XXXXXX)
PIDS=()
NODES="R B C D"
cleanup() {
    for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; done
    wait 2>/dev/null
    for n in $NODES hub; do ip netns del "$tag-$n" 2>/dev/null; done
    [ -n "${SPLIT_BENCH_DEBUG:-}" ] && echo "kept $W" >&2 || rm -rf "$W"
}
trap cleanup EXIT
die() { echo "split_bench: $*" >&2; for f in "$W"/*.log; do [ -f "$f" ] && { echo "== $f" >&2; tail -n 8 "$f" >&2; }; done; exit 1; }
X() { local n=$1; shift; ip netns exec "$tag-$n" "$@"; }

# ---- namespaces: node N at 10.79.I.2, the hub at 10.79.I.1 on the same veth ----
ip netns add "$tag-hub" 2>"$W/err" || die "cannot make network namespaces (root?): $(cat "$W/err")"
ip -n "$tag-hub" link set lo up
i=0
declare -A NET
for n in $NODES; do
    i=$((i + 1))
    NET[$n]=$i
    ip netns add "$tag-$n" || die "netns $n"
    ip -n "$tag-$n" link add eth0 type veth peer name "v$n" netns "$tag-hub" || die "veth $n"
    ip -n "$tag-$n" addr add "10.79.$i.2/24" dev eth0
    ip -n "$tag-$n" link set eth0 up
    ip -n "$tag-$n" link set lo up
    ip -n "$tag-hub" addr add "10.79.$i.1/24" dev "v$n"
    ip -n "$tag-hub" link set "v$n" up
done
X hub sysctl -qw net.ipv4.ip_forward=0

# proxy NAME FROM TO ONE_WAY_MS: in the hub, listening on FROM's subnet, to TO's node port
# 4001; sets via_FROM_TO (the address FROM dials to reach TO)
proxy() {
    local from=$1 to=$2 ms=$3 log="$W/proxy-$1-$2.log" p="" k
    ( exec ip netns exec "$tag-hub" "$PROXY" "10.79.${NET[$from]}.1:0" "10.79.${NET[$to]}.2:4001" --delay-ms "$ms" >"$log" 2>&1 ) &
    PIDS+=("$!")
    for k in $(seq 100); do
        p=$(sed -n 's/^netproxy: listening on [0-9.]*://p' "$log")
        [ -n "$p" ] && break
        sleep 0.05
    done
    [ -n "$p" ] || die "netproxy $from->$to did not start"
    printf -v "via_${from}_$to" '/ip4/10.79.%s.1/tcp/%s' "${NET[$from]}" "$p"
}

# node NAME ARGS...: serve in NAME's namespace, p2p on 0.0.0.0:4001 there; sets pid_NAME id_NAME
node() {
    local n=$1 k
    shift
    ( MESHLLM_HOME="$W/home-$n" exec ip netns exec "$tag-$n" "$BIN" serve --model "$MODEL" --host 127.0.0.1 --port 9337 \
        --threads 1 --slots 4 --p2p --p2p-listen "/ip4/10.79.${NET[$n]}.2/tcp/${P2P_PORT:-4001}" --no-mdns "$@" \
        >"$W/$n.log" 2>&1 ) &
    local pid=$! # the subshell execs ip, which execs meshllm: one pid
    PIDS+=("$pid")
    for k in $(seq 600); do
        grep -q "web console at" "$W/$n.log" && break
        kill -0 "$pid" 2>/dev/null || die "$n exited"
        sleep 0.1
    done
    printf -v "pid_$n" '%s' "$pid"
    printf -v "id_$n" '%s' "$(sed -n 's/^meshllm: peer ID //p' "$W/$n.log" | tail -1)"
}
api() { local n=$1; shift; X "$n" curl -s -m 120 "$@"; }
stream() { # NODE PROMPT TOKENS [N_CONCURRENT]: tokens/s (aggregate), via the OpenAI stream
    X "$1" node "$ROOT/bench/split_bench.mjs" stream "http://127.0.0.1:9337" "$MNAME" "$3" "$2" "${4:-1}"
}
med() { printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1} END {if (NR) print v[int((NR + 1) / 2)]}'; }

PROMPT_STORY="Once upon a time"
PROMPT_REP="one two three four five six seven eight one two three four five six seven eight one two three four five six seven eight one two"

echo "split_bench: $MNAME ($NL layers) as $RANGE_B | $RANGE_C | $RANGE_D, requester --layers none; RTTs $RTTS ms; $NTOK tokens, $ROUNDS rounds" >&2
echo "machine: $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) CPUs; load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
echo
echo "| RTT | single node tok/s | bound tok/s | one session tok/s | vs bound | spec ngram tok/s (repeats) | vs bound | accepted | 4 sessions tok/s | vs 4 x one | bytes/token/hop |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
for rtt in $RTTS; do
    one_way=$((rtt / 2))          # netproxy takes whole milliseconds: an odd RTT rounds down
    rtt=$((2 * one_way))          # the RTT the links really add, used for the bound
    # the mesh: B owns it; C, D, R join through proxies
    MESHLLM_HOME="$W/home-B" X B "$BIN" mesh create >/dev/null || die "mesh create"
    for a in C D R; do proxy "$a" B "$one_way"; done
    for a in C D; do proxy R "$a" "$one_way"; done
    node B --layers "$RANGE_B"
    for a in C D; do
        v="via_${a}_B"
        tok=$(MESHLLM_HOME="$W/home-B" X B "$BIN" invite --addr "${!v}") || die "invite"
        node "$a" --layers "$( [ $a = C ] && echo "$RANGE_C" || echo "$RANGE_D")" --join "$tok" --bootstrap "${!v}/p2p/$id_B"
    done
    tok=$(MESHLLM_HOME="$W/home-B" X B "$BIN" invite --addr "$via_R_B") || die "invite R"
    rargs=(--layers none --join "$tok" --bootstrap "$via_R_B/p2p/$id_B" --bootstrap "$via_R_C/p2p/$id_C"
        --bootstrap "$via_R_D/p2p/$id_D")
    node R "${rargs[@]}"
    ok=""
    for k in $(seq 120); do
        code=$(api R -o /dev/null -w '%{http_code}' "http://127.0.0.1:9337/node/route?model=$MNAME")
        if [ "$code" = 200 ] && stream R "$PROMPT_STORY" 2 >/dev/null 2>&1; then ok=1; break; fi
        sleep 0.5
    done
    [ -n "$ok" ] || die "no route at RTT $rtt"
    # compute: the whole model on one node in R's namespace, 1 thread, interleaved
    one=() single=() spec=() four=() acc=""
    b0=$(api R http://127.0.0.1:9337/metrics | awk '/^meshllm_pipeline_(sent|received)_bytes_total/ {s += $2} END {print s + 0}')
    t0=$(api R http://127.0.0.1:9337/metrics | awk '/^meshllm_generated_tokens_total/ {s += $2} END {print s + 0}')
    for r in $(seq "$ROUNDS"); do
        single+=("$(X R "$BIN" bench "$MODEL" -t 1 -p 0 -n "$NTOK" -r 1 2>/dev/null |
            awk -F'|' '/ tg[0-9]/ {split($7, a, " "); v = a[1]} END {print v + 0}')")
        one+=("$(stream R "$PROMPT_STORY" "$NTOK")")
    done
    b1=$(api R http://127.0.0.1:9337/metrics | awk '/^meshllm_pipeline_(sent|received)_bytes_total/ {s += $2} END {print s + 0}')
    t1=$(api R http://127.0.0.1:9337/metrics | awk '/^meshllm_generated_tokens_total/ {s += $2} END {print s + 0}')
    for r in $(seq "$ROUNDS"); do four+=("$(stream R "$PROMPT_STORY" "$NTOK" 4)"); done
    # speculative: R again with --spec ngram
    kill "$pid_R"; wait "$pid_R" 2>/dev/null
    node R "${rargs[@]}" --spec ngram
    for k in $(seq 120); do stream R "$PROMPT_REP" 2 >/dev/null 2>&1 && break; sleep 0.5; done
    for r in $(seq "$ROUNDS"); do spec+=("$(stream R "$PROMPT_REP" "$NTOK")"); done
    acc=$(api R http://127.0.0.1:9337/metrics | awk '/^meshllm_spec_drafted_tokens_total/ {d += $2} /^meshllm_spec_accepted_tokens_total/ {a += $2} END {if (d) printf "%.0f %%", 100 * a / d; else print "-"}')
    s1=$(med "${single[@]}") o1=$(med "${one[@]}") sp=$(med "${spec[@]}") f4=$(med "${four[@]}")
    row=$(awk -v s="$s1" -v o="$o1" -v sp="$sp" -v f="$f4" -v rtt="$rtt" -v acc="$acc" \
        -v bytes=$((b1 - b0)) -v toks=$((t1 - t0)) 'BEGIN {
        bound = s > 0 ? 1000 / (1000 / s + 3 * rtt) : 0;
        bpt = toks > 0 ? bytes / toks / 3 : 0;
        printf "| %s ms | %.1f | %.1f | %.1f | %.2f | %.1f | %.2f | %s | %.1f | %.2f | %.0f |",
            rtt, s, bound, o, bound ? o / bound : 0, sp, bound ? sp / bound : 0, acc, f, o ? f / (4 * o) : 0, bpt }')
    echo "$row"
    for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; done
    wait 2>/dev/null
    PIDS=()
    rm -rf "$W"/home-*
done
echo
echo "n_embd x 2 bytes (F16) is what one token's hidden state costs each way on a hop; bytes/token/hop counts both directions."
