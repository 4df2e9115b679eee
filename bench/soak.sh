#!/usr/bin/env bash
# soak.sh - one node under mixed hostile traffic while a steady client uses it (issue 11).
#
# usage: bench/soak.sh [-B build-dir] [-d seconds] [-m model.gguf] [-j "soak_junk options"]
#
# Starts `meshllm serve --p2p` (1 thread, 2 slots, stories260K unless -m) on 127.0.0.1, then
# for -d seconds (default 600) runs bench/soak_junk against it (default: 200 idle sockets on
# the p2p port, 5 sybil identities a second, 50 ADD_PROVIDER records a second, 50 slowloris
# HTTP connections, the idle and slowloris ones from 127.0.0.2) and meanwhile:
#   - a steady client: one streamed-off /v1/completions of 16 tokens every 0.5 s (curl, 10 s
#     timeout): success rate and latency percentiles;
#   - a fresh node every 60 s that bootstraps through the node: connected or not within 10 s;
#   - the node's RSS and open file descriptors every 10 s.
# Prints Markdown tables for bench/RESULTS.md. Every process started is stopped on exit.
set -u
BUILD=build
DUR=600
MODEL=
JUNK_OPTS="--idle 200 --sybil-per-s 5 --provide-per-s 50 --slowloris 50 --from 127.0.0.2"
while getopts B:d:m:j: o; do
    case $o in
    B) BUILD=$OPTARG ;;
    d) DUR=$OPTARG ;;
    m) MODEL=$OPTARG ;;
    j) JUNK_OPTS=$OPTARG ;;
    *) sed -n '4p' "$0" >&2; exit 2 ;;
    esac
done
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
BIN=$BUILD/meshllm
JUNK=$BUILD/bench/soak_junk
MODELS=${MESHLLM_TEST_MODELS:-$ROOT/../shared/models}
MODEL=${MODEL:-$MODELS/stories260K.gguf}
for b in "$BIN" "$JUNK"; do
    [ -x "$b" ] || { echo "soak: $b missing (make BUILD=$BUILD)" >&2; exit 1; }
done
[ -f "$MODEL" ] || { echo "soak: no model at $MODEL (-m FILE)" >&2; exit 1; }
W=$(mktemp -d /tmp/meshllm-soak.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; done
    wait 2>/dev/null
    [ -n "${SOAK_DEBUG:-}" ] && echo "kept $W" >&2 || rm -rf "$W"
}
trap cleanup EXIT
die() { echo "soak: $*" >&2; for f in "$W"/*.log; do [ -f "$f" ] && { echo "== $f" >&2; tail -n 5 "$f" >&2; }; done; exit 1; }

# node_start NAME ARGS...: sets url_NAME pid_NAME id_NAME addr_NAME
node_start() {
    local name=$1 port="" i
    shift
    MESHLLM_HOME="$W/$name" "$BIN" serve --model "$MODEL" --host 127.0.0.1 --port 0 \
        --threads 1 --slots 2 --p2p --p2p-listen /ip4/127.0.0.1/tcp/0 --no-mdns "$@" \
        >"$W/$name.log" 2>&1 &
    local pid=$!
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

node_start T
HTTP_HOSTPORT=${url_T#http://}
echo "soak: node T at $url_T, p2p $addr_T, junk: $JUNK_OPTS, $DUR s" >&2
"$JUNK" --p2p "$addr_T" --http "$HTTP_HOSTPORT" --seconds "$DUR" $JUNK_OPTS >"$W/junk.out" 2>"$W/junk.log" &
JUNK_PID=$!
PIDS+=("$JUNK_PID")

BODY="{\"model\":\"$(basename "$MODEL" .gguf)\",\"prompt\":\"Once upon a time\",\"max_tokens\":16,\"temperature\":0}"
t_end=$(($(date +%s) + DUR))
next_sample=0 next_fresh=$(($(date +%s) + 30)) n_fresh=0
: >"$W/lat" ; : >"$W/mem"
while [ "$(date +%s)" -lt "$t_end" ]; do
    now=$(date +%s)
    curl -s -o /dev/null -m 10 -w '%{http_code} %{time_total}\n' -H 'Content-Type: application/json' \
        -d "$BODY" "$url_T/v1/completions" >>"$W/lat" || echo "000 10" >>"$W/lat"
    if [ "$now" -ge "$next_sample" ]; then
        rss=$(awk '/^VmRSS/ {print $2}' "/proc/$pid_T/status" 2>/dev/null)
        fds=$(ls "/proc/$pid_T/fd" 2>/dev/null | wc -l)
        echo "$((now - t_end + DUR)) ${rss:-0} $fds" >>"$W/mem"
        next_sample=$((now + 10))
    fi
    if [ "$now" -ge "$next_fresh" ] && [ "$((now + 15))" -lt "$t_end" ]; then
        n_fresh=$((n_fresh + 1))
        node_start "F$n_fresh" --bootstrap "$addr_T"
        fid_var="id_F$n_fresh" fpid_var="pid_F$n_fresh"
        ok=no
        for i in $(seq 40); do
            if curl -s -m 2 "$url_T/node/peers" | grep -q "${!fid_var}"; then ok=yes; break; fi
            sleep 0.25
        done
        echo "$((now - t_end + DUR)) $ok" >>"$W/fresh"
        kill "${!fpid_var}" 2>/dev/null
        next_fresh=$((now + 60))
    fi
    sleep 0.5
done
wait "$JUNK_PID" 2>/dev/null
kill -0 "$pid_T" 2>/dev/null && alive=yes || alive=no

echo
echo "Junk (soak_junk totals): $(tail -1 "$W/junk.out")"
echo
echo "| steady client | value |"
echo "|---|---|"
awk '{n++; if ($1 == 200) ok++; else bad[$1]++; print $2 > "'"$W/lat.s"'"}
     END {printf "| requests | %d |\n| succeeded (200) | %d (%.1f %%) |\n", n, ok, n ? 100 * ok / n : 0;
          for (c in bad) printf "| status %s | %d |\n", c, bad[c]}' "$W/lat"
sort -n "$W/lat.s" | awk 'function q(p,  i) { i = int(NR * p); if (i < 1) i = 1; return 1000 * v[i] }
    {v[NR] = $1}
    END { if (NR == 0) exit;
      printf "| latency p50 | %.0f ms |\n| latency p90 | %.0f ms |\n", q(0.5), q(0.9);
      printf "| latency p99 | %.0f ms |\n| latency max | %.0f ms |\n", q(0.99), 1000 * v[NR] }'
if [ -f "$W/fresh" ]; then
    echo "| fresh nodes bootstrapped through T | $(grep -c yes "$W/fresh") of $(wc -l <"$W/fresh") |"
fi
echo "| node alive at the end | $alive |"
echo
echo "| t (s) | RSS (MiB) | fds |"
echo "|---|---|---|"
awk 'NR == 1 || NR % 6 == 0 {printf "| %d | %.1f | %d |\n", $1, $2 / 1024, $3} END {printf "| %d (end) | %.1f | %d |\n", $1, $2 / 1024, $3}' "$W/mem"
echo
echo "node T's /metrics (refusals):"
curl -s -m 5 "$url_T/metrics" | grep -iE 'refus|evict|trim|quota|timeout' | sed 's/^/    /'
