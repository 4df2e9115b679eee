#!/usr/bin/env bash
# split_route.test.sh - the user-facing side of a split model, with real `meshllm serve`
# processes on 127.0.0.1 over stories260K (5 layers): B creates a mesh and holds layers 0-1,
# D 4-4, R joins with --layers none. With layers 2-3 missing: `meshllm route` says which
# (exit 1, hint --layers 2-3), GET /node/route says so in JSON, and every generation
# endpoint (OpenAI and Ollama, streaming or not) answers 503 with Retry-After naming 2-3;
# the console's mesh map shows the missing layers. Then C joins with 2-3: `meshllm route`
# lists B, C, D with their layers, RTT and load and "5 of 5 layers", a request runs through
# the pipeline, /metrics counts its passes and bytes (meshllm_pipeline_*), and the console
# shows the three stages. Every process is stopped on exit.
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
    MESHLLM_LOG=info MESHLLM_HOME="$work/$name" "$bin" serve --host 127.0.0.1 --port 0 --threads 1 --slots 2 \
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
    printf -v "id_$name" '%s' "$(sed -n 's/^meshllm: peer ID //p' "$work/$name.log")"
    printf -v "addr_$name" '%s' "$(sed -n 's/^meshllm: p2p listening on //p' "$work/$name.log" | head -1)"
}
short() { echo "${1:0:8}...${1: -6}"; }
jq_() { node -e "const j=JSON.parse(require('fs').readFileSync(0,'utf8'));process.stdout.write(String($1))"; }

"$bin" route --help >"$work/help.out" || fail "route --help exit $?"
grep -q "usage: meshllm route MODEL" "$work/help.out" || fail "route --help: $(cat "$work/help.out")"
"$bin" route >/dev/null 2>&1
[ $? -eq 2 ] || fail "route without a model is not misuse"
"$bin" --help | grep -q "route " || fail "route is not in the command table"
ok

MESHLLM_HOME="$work/B" "$bin" mesh create >/dev/null 2>&1 || fail "mesh create"
start_node B --model "$model" --layers 0-1
invite() { MESHLLM_HOME="$work/B" "$bin" invite --addr "$addr_B"; }
start_node D --model "$model" --layers 4-4 --join "$(invite)"
start_node R --model "$model" --layers none --join "$(invite)"

# once B's and D's announcements have arrived, exactly layers 2-3 are missing
for i in $(seq 150); do
    j=$(curl -s "$url_R/node/route?model=stories260K")
    miss=$(echo "$j" | jq_ 'j.missing.map(g=>g.layers).join(",")' 2>/dev/null)
    [ "$miss" = "2-3" ] && break
    sleep 0.2
done
[ "$miss" = "2-3" ] || fail "/node/route never said 2-3 are missing: $j"
[ "$(echo "$j" | jq_ 'j.covered+" "+j.state+" "+j.n_layer+" "+j.local_layers.layers')" = "false no_route 5 none" ] ||
    fail "uncovered route JSON: $j"
ok
"$bin" route stories260K --url "$url_R" >"$work/route1.out" 2>"$work/route1.err"
rc=$?
[ $rc -eq 1 ] || fail "route of an uncovered model: exit $rc: $(cat "$work/route1.out" "$work/route1.err")"
grep -q "none: no mesh member announces layers 2-3 (3 of 5 layers are held)" "$work/route1.out" ||
    fail "route output lacks the missing layers: $(cat "$work/route1.out")"
grep -q -- "--layers 2-3" "$work/route1.out" || fail "route output lacks the hint: $(cat "$work/route1.out")"
grep -q "no route covers 'stories260K'" "$work/route1.err" || fail "route stderr: $(cat "$work/route1.err")"
"$bin" route nosuchmodel --url "$url_R" >/dev/null 2>"$work/route404.err"
[ $? -eq 1 ] && grep -q "does not exist on this node or its mesh" "$work/route404.err" || fail "route of an unknown model: $(cat "$work/route404.err")"
[ "$(curl -s -o /dev/null -w '%{http_code}' "$url_R/node/route")" = 400 ] || fail "/node/route without a model is not 400"
ok

# every generation endpoint refuses up front: 503, Retry-After, the missing layers named
chat='{"model":"stories260K","messages":[{"role":"user","content":"Once upon a time"}],"max_tokens":8'
gen='{"model":"stories260K","prompt":"Once upon a time","max_tokens":8'
for req in "/v1/chat/completions $chat,\"stream\":false}" "/v1/chat/completions $chat,\"stream\":true}" \
    "/v1/completions $gen,\"stream\":true}" "/api/chat $chat,\"stream\":false}" "/api/chat $chat,\"stream\":true}" \
    "/api/generate $gen,\"stream\":false}" "/api/generate $gen,\"stream\":true}"; do
    path=${req%% *}
    out=$(curl -s -D "$work/h503" "$url_R$path" -H 'content-type: application/json' -d "${req#* }")
    head -1 "$work/h503" | grep -q " 503" || fail "$path ${req#* }: $(head -1 "$work/h503") $out"
    grep -qi '^retry-after: [0-9]' "$work/h503" || fail "$path: no Retry-After"
    [[ $out == *"layers 2-3"* && $out == *"--layers 2-3"* ]] || fail "$path: the 503 does not name layers 2-3: $out"
done
ok

if [ -x "${CHROMIUM:-/usr/bin/chromium}" ] && e2e_npm >/dev/null 2>&1; then has_browser=1; else has_browser=0; fi
console() { # MODE: the console's mesh map shows the route (or the missing layers)
    MESHLLM_URL=$url_R MODE=$1 IDS="$id_B $id_C $id_D" node --test --test-concurrency=1 "$E2E_DIR/split_route.test.mjs" \
        >"$work/console-$1.log" 2>&1 || fail "console ($1): $(tail -n 40 "$work/console-$1.log")"
}
if [ $has_browser = 1 ]; then
    id_C=""
    console uncovered
    ok
fi

start_node C --model "$model" --layers 2-3 --join "$(invite)"
covered=0
for i in $(seq 150); do
    "$bin" route stories260K --url "$url_R" >"$work/route2.out" 2>&1 && { covered=1; break; }
    sleep 0.2
done
[ $covered = 1 ] || fail "route never covered the model: $(cat "$work/route2.out")"
grep -q "3 stages cover layers 0-4" "$work/route2.out" || fail "route: $(cat "$work/route2.out")"
grep -q "total  5 of 5 layers" "$work/route2.out" || fail "route total: $(cat "$work/route2.out")"
for n in B:0-1 C:2-3 D:4-4; do
    v="id_${n%%:*}"
    grep -qE "^[0-9]+ +${n#*:} +$(short "${!v}" | sed 's/\./\\./g') +([0-9.]+ ms|-) +[0-9]+/2 active, [0-9]+ queued" "$work/route2.out" ||
        fail "route lacks stage $n ($(short "${!v}")): $(cat "$work/route2.out")"
done
j=$("$bin" route stories260K --url "$url_R" --json) || fail "route --json exit $?"
[ "$(echo "$j" | jq_ 'j.stages.map(s=>s.layers+"@"+s.peer).join(" ")')" = "0-1@$id_B 2-3@$id_C 4-4@$id_D" ] ||
    fail "route --json stages: $j"
ok

# a request runs through it; the pipeline's counters show on /metrics
out=$(curl -s "$url_R/v1/chat/completions" -H 'content-type: application/json' -d "$chat,\"temperature\":0}")
[[ $out == *'"finish_reason"'* && $out != *'"error"'* ]] || fail "the covered model did not answer: $out"
curl -s "$url_R/metrics" >"$work/metrics"
for m in passes_total tokens_total routes_planned_total sent_bytes_total received_bytes_total; do
    v=$(sed -n "s/^meshllm_pipeline_${m}{model=\"stories260K\"} //p" "$work/metrics")
    [ -n "$v" ] && [ "$v" -gt 0 ] || fail "meshllm_pipeline_$m is '$v': $(grep pipeline "$work/metrics")"
done
grep -q '^meshllm_pipeline_stage_failures_total{model="stories260K"} 0$' "$work/metrics" ||
    fail "stage failures: $(grep failures "$work/metrics")"
grep -q '^# TYPE meshllm_pipeline_passes_total counter' "$work/metrics" || fail "no TYPE line"
ok

if [ $has_browser = 1 ]; then
    console covered
    ok
else
    echo "chromium or the npm packages missing: console route view not tested" >&2
    exit 1
fi
echo "$pass passed, 0 failed"
