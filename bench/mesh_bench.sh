#!/usr/bin/env bash
# mesh_bench.sh - what the mesh costs and buys, on real `meshllm serve` processes on 127.0.0.1.
#
# usage: bench/mesh_bench.sh [-B build-dir] [-R rounds] [-n tokens] [-m model.gguf] [parts...]
#   parts (default all): decode failover proxy choice affinity
#
#   decode    a lite node A delegates to B (holds the model) over loopback: streamed greedy
#             decode tokens/s and time to first token, through A vs straight to B,
#             interleaved, R rounds; medians and the ratio.
#   failover  B and C serve stories260K paced at 5 ms a step; a stream through A, SIGKILL of
#             the serving peer after 40 pieces: the longest gap between pieces after the kill
#             (and the usual gap), median of 10; the killed node restarts between rounds.
#   proxy     B behind tools/netproxy at 20 ms RTT (10 ms each way): delegated tokens/s and
#             time to first token, and the RTT A measured.
#   choice    B behind a 5 ms RTT proxy, C behind 50 ms: 10 requests through A, how many B
#             served.
#   affinity  B and C serve; a 6-turn chat through A, time to first token of turns 2-6 and the
#             prompt tokens reused from a slot, with prefix affinity and with round-robin
#             (MESHLLM_ROUTER_ROUND_ROBIN=1 MESHLLM_ROUTER_AFFINITY=0 on A).
# The model of decode/proxy/affinity is made once with bench/mkmodel (random weights, the
# shape of a 110 M-parameter llama, Q4_0) unless -m names one. Every node runs 1 thread and 2
# slots. Every process started is stopped on exit.
set -u
BUILD=build
ROUNDS=5
NTOK=96
MODEL=
while getopts B:R:n:m: o; do
    case $o in
    B) BUILD=$OPTARG ;;
    R) ROUNDS=$OPTARG ;;
    n) NTOK=$OPTARG ;;
    m) MODEL=$OPTARG ;;
    *) sed -n '4,5p' "$0" >&2; exit 2 ;;
    esac
done
shift $((OPTIND - 1))
PARTS=${*:-decode failover proxy choice affinity}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
BIN=$BUILD/meshllm
PROXY=$BUILD/tools/netproxy
MODELS=${MESHLLM_TEST_MODELS:-$ROOT/../shared/models}
STORIES=$MODELS/stories260K.gguf
for b in "$BIN" "$PROXY" "$BUILD/bench/mkmodel"; do
    [ -x "$b" ] || { echo "mesh_bench: $b missing (make BUILD=$BUILD)" >&2; exit 1; }
done
W=$(mktemp -d /tmp/meshllm-meshbench.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; done
    wait 2>/dev/null
    [ -n "${MESH_BENCH_DEBUG:-}" ] && echo "kept $W" >&2 || rm -rf "$W"
}
trap cleanup EXIT
J() { node "$ROOT/bench/mesh_bench.mjs" "$@"; }
# jget JSON FIELD: the field (numbers with one decimal)
jget() { node -e 'const j=JSON.parse(process.argv[1]); const v=process.argv[2].split(".").reduce((o,k)=>o?.[k], j);
  console.log(typeof v === "number" && !Number.isInteger(v) ? v.toFixed(1) : (v ?? ""))' "$1" "$2"; }
die() { echo "mesh_bench: $*" >&2; for f in "$W"/*.log; do [ -f "$f" ] && { echo "== $f" >&2; tail -n 5 "$f" >&2; }; done; exit 1; }

if [ -z "$MODEL" ]; then
    MODEL=/tmp/meshllm-bench-m1024-q4_0.gguf
    [ -f "$MODEL" ] || "$BUILD/bench/mkmodel" --arch llama --dim 1024 --layers 4 --heads 16 \
        --kv-heads 4 --ff 2816 --vocab "$MODELS/llamacpp-vocab/ggml-vocab-llama-spm.gguf" \
        --type Q4_0 -o "$MODEL" >/dev/null || die "mkmodel failed"
fi
MNAME=$(basename "$MODEL" .gguf)

# node NAME ARGS...: starts `serve` with home $W/NAME; sets url_NAME id_NAME addr_NAME pid_NAME
node_start() {
    local name=$1 port="" i
    shift
    MESHLLM_HOME="$W/$name" "$BIN" serve --host 127.0.0.1 --port 0 --threads 1 --slots 2 \
        --p2p --p2p-listen /ip4/127.0.0.1/tcp/0 --no-mdns "$@" >"$W/$name.log" 2>&1 &
    local pid=$!
    disown "$pid" # a SIGKILL by the failover part is expected: no job report
    PIDS+=("$pid")
    for i in $(seq 300); do
        port=$(grep -oE 'API at http://127\.0\.0\.1:[0-9]+' "$W/$name.log" | grep -oE '[0-9]+$' | head -1)
        [ -n "$port" ] && break
        kill -0 "$pid" 2>/dev/null || die "$name exited"
        sleep 0.05
    done
    [ -n "$port" ] || die "$name printed no API address"
    printf -v "url_$name" 'http://127.0.0.1:%s' "$port"
    printf -v "pid_$name" '%s' "$pid"
    printf -v "id_$name" '%s' "$(sed -n 's/^meshllm: peer ID //p' "$W/$name.log" | tail -1)"
    printf -v "addr_$name" '%s' "$(sed -n 's/^meshllm: p2p listening on //p' "$W/$name.log" | tail -1)"
}
# proxy NAME TARGET_TCP_PORT ONE_WAY_MS: sets pport_NAME
proxy_start() {
    "$PROXY" 127.0.0.1:0 "127.0.0.1:$2" --delay-ms "$3" >"$W/proxy-$1.log" 2>&1 &
    PIDS+=("$!")
    local i p=""
    for i in $(seq 100); do
        p=$(sed -n 's/^netproxy: listening on 127\.0\.0\.1://p' "$W/proxy-$1.log")
        [ -n "$p" ] && break
        sleep 0.05
    done
    [ -n "$p" ] || die "netproxy $1 did not start"
    printf -v "pport_$1" '%s' "$p"
}
tcp_port() { echo "$1" | sed -E 's|^/ip4/[^/]+/tcp/([0-9]+)/.*|\1|'; }
# wait_model URL PEER_ID MODEL: until URL's node has PEER_ID announcing MODEL
wait_model() {
    local i
    for i in $(seq 150); do
        curl -s "$1/node/peers" | node -e '
          let j = JSON.parse(require("fs").readFileSync(0, "utf8"));
          let p = (j.mesh?.peers ?? []).find((x) => x.id === process.argv[1]);
          process.exit(p && p.member && p.announced && p.models.some((m) => m.name === process.argv[2]) ? 0 : 1);
        ' "$2" "$3" && return 0
        sleep 0.2
    done
    return 1
}
# wait_back URL PEER_ID: until URL's node is connected again to PEER_ID (a restarted node)
wait_back() {
    local i
    for i in $(seq 150); do
        curl -s "$1/node/peers" | node -e '
          let j = JSON.parse(require("fs").readFileSync(0, "utf8"));
          let p = (j.mesh?.peers ?? []).find((x) => x.id === process.argv[1]);
          process.exit(p && p.connected && p.announced ? 0 : 1);' "$2" && return 0
        sleep 0.2
    done
    return 1
}
rtt_of() { curl -s "$1/node/peers" | node -e '
  let j = JSON.parse(require("fs").readFileSync(0, "utf8"));
  let p = (j.mesh?.peers ?? []).find((x) => x.id === process.argv[1]);
  console.log(p?.rtt_ms ?? "?");' "$2"; }
stop_all() {
    local p i
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
    for p in "${PIDS[@]}"; do
        for i in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.05; done
        kill -KILL "$p" 2>/dev/null
    done
    PIDS=()
}
# mesh OWNER_NAME: makes the mesh in $W/OWNER_NAME
mesh_new() { rm -rf "$W"/*/; MESHLLM_HOME="$W/$1" "$BIN" mesh create >/dev/null || die "mesh create"; }
invite() { MESHLLM_HOME="$W/B" "$BIN" invite "$@"; }
med() { J median "[$(IFS=,; echo "$*")]"; }
ratio() { node -e "console.log((Number(process.argv[1]) / Number(process.argv[2])).toFixed(3))" "$1" "$2"; }

echo "# mesh_bench $(date -u +%FT%TZ) commit $(git rev-parse --short HEAD 2>/dev/null)"
echo "# cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) cores," \
    "$(grep -q avx512_vnni /proc/cpuinfo && echo AVX-512 VNNI || (grep -q avx2 /proc/cpuinfo && echo AVX2)); load $(cut -d' ' -f1-3 /proc/loadavg)"

for part in $PARTS; do
case $part in
decode)
    mesh_new B
    node_start B --model "$MODEL"
    node_start A --join "$(invite --addr "$addr_B")"
    wait_model "$url_A" "$id_B" "$MNAME" || die "A never heard B"
    J stream "$url_B" "$MNAME" 8 >/dev/null # warm up
    dt=(); mt=(); df=(); mf=()
    for r in $(seq "$ROUNDS"); do
        d=$(J stream "$url_B" "$MNAME" "$NTOK") || die "direct stream"
        m=$(J stream "$url_A" "$MNAME" "$NTOK") || die "mesh stream"
        [ "$(jget "$m" ran_on)" = "$id_B" ] || die "A's answer ran on $(jget "$m" ran_on)"
        dt+=("$(jget "$d" tps)"); mt+=("$(jget "$m" tps)")
        df+=("$(jget "$d" ttft_ms)"); mf+=("$(jget "$m" ttft_ms)")
    done
    rtt=$(rtt_of "$url_A" "$id_B")
    echo
    echo "## decode: $MNAME, $NTOK tokens, $ROUNDS rounds interleaved (A lite -> B over loopback; ping RTT $rtt ms)"
    echo "| path | decode tok/s (median) | TTFT ms (median) | per round tok/s |"
    echo "|---|---:|---:|---|"
    echo "| straight to B | $(med "${dt[@]}") | $(med "${df[@]}") | ${dt[*]} |"
    echo "| A -> B (delegated) | $(med "${mt[@]}") | $(med "${mf[@]}") | ${mt[*]} |"
    echo "ratio delegated/direct decode: $(ratio "$(med "${mt[@]}")" "$(med "${dt[@]}")")x;" \
        "TTFT added: $(node -e "console.log((Number(process.argv[1]) - Number(process.argv[2])).toFixed(2))" "$(med "${mf[@]}")" "$(med "${df[@]}")") ms"
    stop_all
    ;;
failover)
    mesh_new B
    export MESHLLM_SCHED_STEP_DELAY_MS=5
    node_start B --model "$STORIES"
    tokC=$(invite --addr "$addr_B")
    MESHLLM_HOME="$W/C" "$BIN" join "$tokC" >/dev/null || die "join C"
    node_start C --model "$STORIES"
    unset MESHLLM_SCHED_STEP_DELAY_MS
    node_start A --join "$(invite --addr "$addr_B")"
    wait_model "$url_A" "$id_B" stories260K && wait_model "$url_A" "$id_C" stories260K || die "A never heard B and C"
    gaps=(); usual=(); bad=0
    for r in $(seq 10); do
        f=$(J failover "$url_A" stories260K 300 40 "{\"$id_B\":$pid_B,\"$id_C\":$pid_C}") || die "failover stream"
        [ -n "${MESH_BENCH_DEBUG:-}" ] && echo "$f" >&2
        [ "$(jget "$f" tokens)" = 300 ] || bad=$((bad + 1))
        gaps+=("$(jget "$f" gap_ms)"); usual+=("$(jget "$f" usual_gap_ms)")
        victim=$(jget "$f" served_first)
        # restart the killed node (same identity and store: it finds the mesh again by itself)
        if [ "$victim" = "$id_B" ]; then
            MESHLLM_SCHED_STEP_DELAY_MS=5 node_start B --model "$STORIES"
            wait_back "$url_A" "$id_B" || die "B did not come back"
        else
            MESHLLM_SCHED_STEP_DELAY_MS=5 node_start C --model "$STORIES"
            wait_back "$url_A" "$id_C" || die "C did not come back"
        fi
    done
    echo
    echo "## failover: stories260K paced 5 ms/step, 300 tokens, SIGKILL of the serving peer after 40 pieces, 10 rounds"
    echo "| measure | median | per round |"
    echo "|---|---:|---|"
    echo "| longest gap after the kill, ms | $(med "${gaps[@]}") | ${gaps[*]} |"
    echo "| usual gap between pieces, ms | $(med "${usual[@]}") | ${usual[*]} |"
    echo "streams that did not end with all 300 tokens: $bad of 10"
    stop_all
    ;;
proxy)
    mesh_new B
    node_start B --model "$MODEL"
    proxy_start B "$(tcp_port "$addr_B")" 10
    paddr="/ip4/127.0.0.1/tcp/$pport_B/p2p/$id_B"
    node_start A --join "$(invite --addr "/ip4/127.0.0.1/tcp/$pport_B")" --bootstrap "$paddr"
    wait_model "$url_A" "$id_B" "$MNAME" || die "A never heard B through the proxy"
    sleep 6 # a ping round
    J stream "$url_A" "$MNAME" 8 >/dev/null
    dt=(); mt=(); df=(); mf=()
    for r in $(seq "$ROUNDS"); do
        d=$(J stream "$url_B" "$MNAME" "$NTOK") || die "direct stream"
        m=$(J stream "$url_A" "$MNAME" "$NTOK") || die "mesh stream"
        dt+=("$(jget "$d" tps)"); mt+=("$(jget "$m" tps)")
        df+=("$(jget "$d" ttft_ms)"); mf+=("$(jget "$m" ttft_ms)")
    done
    echo
    echo "## proxy: A -> netproxy (10 ms each way) -> B, $MNAME, $NTOK tokens, $ROUNDS rounds; A's ping RTT to B $(rtt_of "$url_A" "$id_B") ms"
    echo "| path | decode tok/s (median) | TTFT ms (median) | per round tok/s |"
    echo "|---|---:|---:|---|"
    echo "| straight to B (no proxy) | $(med "${dt[@]}") | $(med "${df[@]}") | ${dt[*]} |"
    echo "| A -> 20 ms RTT -> B | $(med "${mt[@]}") | $(med "${mf[@]}") | ${mt[*]} |"
    echo "ratio: $(ratio "$(med "${mt[@]}")" "$(med "${dt[@]}")")x"
    stop_all
    ;;
choice)
    mesh_new B
    node_start B --model "$STORIES"
    tokC=$(invite --addr "$addr_B")
    MESHLLM_HOME="$W/C" "$BIN" join "$tokC" >/dev/null || die "join C"
    node_start C --model "$STORIES"
    proxy_start B "$(tcp_port "$addr_B")" 2
    proxy_start C "$(tcp_port "$addr_C")" 25
    node_start A --join "$(invite --addr "/ip4/127.0.0.1/tcp/$pport_B")" \
        --bootstrap "/ip4/127.0.0.1/tcp/$pport_B/p2p/$id_B" --bootstrap "/ip4/127.0.0.1/tcp/$pport_C/p2p/$id_C"
    wait_model "$url_A" "$id_B" stories260K && wait_model "$url_A" "$id_C" stories260K || die "A never heard B and C"
    sleep 6 # a ping round
    nb=0
    for r in $(seq 10); do
        m=$(J stream "$url_A" stories260K 16) || die "stream"
        [ "$(jget "$m" ran_on)" = "$id_B" ] && nb=$((nb + 1))
    done
    echo
    echo "## choice: B behind 2 ms each way, C behind 25 ms each way (A's ping RTT: B $(rtt_of "$url_A" "$id_B") ms, C $(rtt_of "$url_A" "$id_C") ms)"
    echo "requests served by the faster peer B: $nb of 10"
    stop_all
    ;;
affinity)
    for mode in affinity round-robin; do
        mesh_new B
        node_start B --model "$MODEL"
        tokC=$(invite --addr "$addr_B")
        MESHLLM_HOME="$W/C" "$BIN" join "$tokC" >/dev/null || die "join C"
        node_start C --model "$MODEL"
        if [ $mode = affinity ]; then
            node_start A --join "$(invite --addr "$addr_B")"
        else
            MESHLLM_ROUTER_ROUND_ROBIN=1 MESHLLM_ROUTER_AFFINITY=0 node_start A --join "$(invite --addr "$addr_B")"
        fi
        wait_model "$url_A" "$id_B" "$MNAME" && wait_model "$url_A" "$id_C" "$MNAME" || die "A never heard B and C"
        tt=(); cached=0; prompt=0; hops=0
        for r in $(seq 5); do
            c=$(J chat "$url_A" "$MNAME" 6 "$mode-$r-$RANDOM") || die "chat"
            line=$(node -e '
              const t = JSON.parse(process.argv[1]).slice(1);
              let hops = 0; for (let i = 1; i < t.length; i++) hops += t[i].ran_on !== t[i-1].ran_on;
              console.log(t.map((x) => x.ttft_ms.toFixed(1)).join(","), t.reduce((a, x) => a + x.cached, 0),
                          t.reduce((a, x) => a + x.prompt, 0), hops);' "$c")
            read -r ts ca pr ho <<<"$line"
            tt+=("$ts"); cached=$((cached + ca)); prompt=$((prompt + pr)); hops=$((hops + ho))
            sleep 1.5 # let the serving nodes announce what they hold
        done
        all=$(IFS=,; echo "${tt[*]}")
        eval "res_$(echo $mode | tr - _)=\"| $mode | \$(med $all) | $cached of $prompt | $hops | ${tt[*]} |\""
        stop_all
    done
    echo
    echo "## affinity: 6-turn chat through A over B and C ($MNAME), 5 conversations; turns 2-6"
    echo "| routing | TTFT ms (median) | prompt tokens reused | peer changes | TTFT per turn |"
    echo "|---|---:|---:|---:|---|"
    echo "$res_affinity"
    echo "$res_round_robin"
    ;;
*) die "unknown part $part" ;;
esac
done
