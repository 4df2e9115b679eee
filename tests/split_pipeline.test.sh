#!/usr/bin/env bash
# split_pipeline.test.sh - a split model with real `meshllm serve` processes on 127.0.0.1:
# B creates a mesh and holds layers 0-1 of stories260K, C 2-3, D 4 (--layers), R joins with
# --layers none (embedding and head only). R's /v1/chat/completions answers greedily with
# the text of a single whole node W, X-Meshllm-Ran-On names B, C and D with their layers,
# and a malformed --layers is misuse (exit 2). Recovery: a spare E also holds 2-3; C is
# killed (SIGKILL) in the middle of a streamed answer and the stream goes on through E to
# W's text exactly, its last chunk naming E; then E is killed mid-stream with no spare left:
# that stream ends with an error, R keeps running, and once F joins with 2-3 R answers W's
# text again. R paces its steps (MESHLLM_SCHED_STEP_DELAY_MS) so that a kill lands
# mid-stream. Every process is stopped on exit.
set -u
source "$(dirname "$0")/e2e/server.sh"
bin=$MESHLLM_BIN
model=$MESHLLM_TEST_MODELS/stories260K.gguf
work=$E2E_TMP
pass=0
fail() {
    echo "FAIL: $*"
    for f in "$work"/*.log; do [ -f "$f" ] && { echo "== $f"; tail -n 25 "$f"; }; done
    exit 1
}
ok() { pass=$((pass + 1)); }

# start_node NAME [serve args...]: sets url_NAME, id_NAME, addr_NAME
start_node() {
    local name=$1
    shift
    MESHLLM_LOG=info MESHLLM_SCHED_STEP_DELAY_MS=${STEP_DELAY_MS:-0} MESHLLM_HOME="$work/$name" "$bin" serve --host 127.0.0.1 --port 0 --threads 1 --slots 2 \
        --p2p-listen /ip4/127.0.0.1/tcp/0 --no-mdns "$@" >"$work/$name.log" 2>&1 &
    local pid=$! port="" i
    E2E_PIDS+=("$pid")
    for i in $(seq 200); do
        port=$(grep -oE 'API at http://127\.0\.0\.1:[0-9]+' "$work/$name.log" | grep -oE '[0-9]+$' | head -1)
        [ -n "$port" ] && break
        kill -0 "$pid" 2>/dev/null || fail "$name exited"
        sleep 0.05
    done
    [ -n "$port" ] || fail "$name printed no API address"
    printf -v "url_$name" 'http://127.0.0.1:%s' "$port"
    printf -v "pid_$name" '%s' "$pid"
    printf -v "id_$name" '%s' "$(sed -n 's/^meshllm: peer ID //p' "$work/$name.log")"
    printf -v "addr_$name" '%s' "$(sed -n 's/^meshllm: p2p listening on //p' "$work/$name.log" | head -1)"
}
body='{"model":"stories260K","messages":[{"role":"user","content":"Once upon a time"}],"temperature":0,"max_tokens":24}'
ask() { # URL HEADERS_FILE -> body on stdout
    curl -s -D "$2" "$1/v1/chat/completions" -H 'content-type: application/json' -d "$body"
}
content() { node -e 'let j=JSON.parse(require("fs").readFileSync(0,"utf8"));process.stdout.write(j.choices[0].message.content)'; }

"$bin" serve --model "$model" --layers 3-x >"$work/misuse.out" 2>&1
[ $? -eq 2 ] || fail "--layers 3-x was not misuse"
grep -q "say A-B" "$work/misuse.out" || fail "no hint for a bad --layers: $(cat "$work/misuse.out")"
ok

MESHLLM_HOME="$work/B" "$bin" mesh create >/dev/null 2>&1 || fail "mesh create"
start_node B --model "$model" --layers 0-1
grep -q "layers 0-1 here" "$work/B.log" || fail "B did not say its layers"
invite() { MESHLLM_HOME="$work/B" "$bin" invite --addr "$addr_B"; }
start_node C --model "$model" --layers 2-3 --join "$(invite)"
start_node D --model "$model" --layers 4-4 --join "$(invite)"
STEP_DELAY_MS=25 start_node R --model "$model" --layers none --join "$(invite)"
grep -q "embedding and head only" "$work/R.log" || fail "R did not say it holds no layers"
start_node W --model "$model" --p2p # in no mesh: a whole node on its own
ok
want=$(ask "$url_W" "$work/W.hdr" | content)
[ -n "$want" ] || fail "the whole node answered nothing"
# R answers once its peers' announcements (with their content hashes) have arrived
got=""
for i in $(seq 150); do
    out=$(ask "$url_R" "$work/R.hdr")
    got=$(echo "$out" | content 2>/dev/null) && [ -n "$got" ] && break
    got=""
    sleep 0.2
done
[ -n "$got" ] || fail "R never answered through the pipeline: $out"
[ "$got" = "$want" ] || fail "pipeline text differs: '$got' vs '$want'"
ok
ran=$(grep -i '^x-meshllm-ran-on:' "$work/R.hdr" | tr -d '\r')
for n in B:0-1 C:2-3 D:4-4; do
    v="id_${n%%:*}"
    [[ $ran == *"${!v}:${n#*:}"* ]] || fail "ran-on '$ran' lacks $n"
done
[[ $ran == *local:none* ]] || fail "ran-on '$ran' does not say R holds none"
ok

# ---- recovery ----
long='{"model":"stories260K","messages":[{"role":"user","content":"Once upon a time"}],"temperature":0,"max_tokens":64'
want_long=$(curl -s "$url_W/v1/chat/completions" -H 'content-type: application/json' -d "$long}" | content)
[ -n "$want_long" ] || fail "the whole node answered nothing to the long request"
# heard NAME: R's peers table lists NAME announcing the model
heard() {
    curl -s "$url_R/node/peers" | node -e '
const j = JSON.parse(require("fs").readFileSync(0, "utf8"));
const ps = (j.mesh && j.mesh.peers) || j.peers || [];
const p = ps.find((e) => e.id === process.argv[1]);
process.exit(p && p.announced && p.models.some((m) => m.name === "stories260K") ? 0 : 1);' "$1"
}
sse() { # FILE FIELD -> the text, ran_on or error of an OpenAI SSE stream
    node -e '
let t="",ran="",err="";
for (const l of require("fs").readFileSync(process.argv[1],"utf8").split("\n")) {
  if (!l.startsWith("data: ") || l === "data: [DONE]") continue;
  const j = JSON.parse(l.slice(6));
  if (j.error) err = j.error.message || "error";
  const c = j.choices && j.choices[0];
  if (c && c.delta && c.delta.content) t += c.delta.content;
  if (j.meshllm && j.meshllm.ran_on) ran = j.meshllm.ran_on;
}
process.stdout.write({text: t, ran_on: ran, error: err}[process.argv[2]]);' "$1" "$2"
}
# stream_kill OUT PID: streams the long request from R into OUT and SIGKILLs PID once five
# chunks of text have arrived; waits for the stream to end
stream_kill() {
    curl -sN "$url_R/v1/chat/completions" -H 'content-type: application/json' \
        -d "$long,\"stream\":true}" >"$1" &
    local cpid=$! i
    for i in $(seq 400); do
        [ "$(grep -c '"content"' "$1")" -ge 5 ] && break
        kill -0 "$cpid" 2>/dev/null || break
        sleep 0.02
    done
    grep -q '\[DONE\]' "$1" && fail "the stream ended before the kill: $(head -c 300 "$1")"
    kill -KILL "$2"
    wait "$cpid"
}
start_node E --model "$model" --layers 2-3 --join "$(invite)"
for i in $(seq 150); do heard "$id_E" && break; sleep 0.2; done
heard "$id_E" || fail "R never heard of the spare E"
# the route R planned earlier goes through C and is kept while it works
stream_kill "$work/s1.sse" "$pid_C"
got=$(sse "$work/s1.sse" text) ran=$(sse "$work/s1.sse" ran_on) err=$(sse "$work/s1.sse" error)
[ -z "$err" ] || fail "the stream failed after C was killed: $err"
[ "$got" = "$want_long" ] || fail "text after recovery differs: '$got' vs '$want_long'"
[[ $ran == *"$id_E:2-3"* && $ran != *"$id_C"* ]] || fail "ran_on '$ran' does not name E instead of C"
grep -q "replaced" "$work/R.log" || fail "R did not log the recovery"
rec=$(curl -s "$url_R/metrics" | awk '/^meshllm_pipeline_recoveries_total/ {s += $2} END {print s + 0}')
[ "$rec" -ge 1 ] || fail "/metrics counts no recovery ($rec)"
ok
# no spare left: the stream ends with an error, R goes on and serves once F joins
stream_kill "$work/s2.sse" "$pid_E"
err=$(sse "$work/s2.sse" error)
[ -n "$err" ] || fail "the stream without a replacement did not end with an error: $(tail -c 300 "$work/s2.sse")"
grep -q "no other member covers its layers" "$work/R.log" || fail "R did not say why it failed"
kill -0 "$pid_R" || fail "R exited"
ok
start_node F --model "$model" --layers 2-3 --join "$(invite)"
got=""
for i in $(seq 150); do
    got=$(curl -s "$url_R/v1/chat/completions" -H 'content-type: application/json' -d "$long}" | content 2>/dev/null) && [ -n "$got" ] && break
    got=""
    sleep 0.2
done
[ "$got" = "$want_long" ] || fail "R after F joined: '$got' vs '$want_long'"
ok
echo "$pass passed, 0 failed"
