#!/usr/bin/env bash
# split_pipeline.test.sh - a split model with real `meshllm serve` processes on 127.0.0.1:
# B creates a mesh and holds layers 0-1 of stories260K, C 2-3, D 4 (--layers), R joins with
# --layers none (embedding and head only). R's /v1/chat/completions answers greedily with
# the text of a single whole node W, X-Meshllm-Ran-On names B, C and D with their layers,
# and a malformed --layers is misuse (exit 2). Every process is stopped on exit.
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
start_node R --model "$model" --layers none --join "$(invite)"
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
echo "$pass passed, 0 failed"
