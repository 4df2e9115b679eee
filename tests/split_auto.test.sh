#!/usr/bin/env bash
# split_auto.test.sh - --auto-split and --accept-stages (/meshllm/stageload/1) with real
# processes on 127.0.0.1. Mesh 1: B (creator) and C serve no model but accept stages, B
# announcing 3x C's speed (MESHLLM_SPEED) with the same free memory; D is a member that does
# not accept stages. `run --layers none --auto-split` asks B for layers 0-3 and C for 4
# (in proportion to memory x speed), never D, and prints, greedily, exactly what a
# whole-model run prints; a second run finds the stages loaded and asks nobody. Mesh 2: E
# (creator) has the F16 model in its model store only, F accepts stages but sees neither
# the file (a mount namespace hides the requester's folder) nor a store copy. A
# `serve --layers none --auto-split` requester S asks both: F answers no_file and is skipped,
# E loads what F would have held too (by content hash, from its store), and S's chat
# completion equals a whole node's. Every process is stopped on exit.
set -u
source "$(dirname "$0")/e2e/server.sh"
bin=$MESHLLM_BIN
model=$MESHLLM_TEST_MODELS/stories260K.gguf
model16=$MESHLLM_TEST_MODELS/stories260K-F16.gguf
work=$E2E_TMP
pass=0
fail() {
    echo "FAIL: $*"
    for f in "$work"/*.log "$work"/*.err; do [ -f "$f" ] && { echo "== $f"; tail -n 30 "$f"; }; done
    exit 1
}
ok() { pass=$((pass + 1)); }

# start_node NAME [serve args...] (env before: NS=1 runs it in a mount namespace that hides
# $work/copy): sets pid_NAME, url_NAME, id_NAME, addr_NAME
start_node() {
    local name=$1
    shift
    local pre=()
    [ -n "${NS:-}" ] && pre=(unshare -m sh -c 'mount -t tmpfs none "$0" && exec "$@"' "$work/copy")
    MESHLLM_LOG=info MESHLLM_HOME="$work/$name" "${pre[@]}" "$bin" serve --host 127.0.0.1 --port 0 \
        --threads 1 --slots 2 --p2p-listen /ip4/127.0.0.1/tcp/0 --no-mdns "$@" >"$work/$name.log" 2>&1 &
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
prompt="Once upon a time"
gen=(--temp 0 -n 40 --threads 1)

"$bin" serve --model "$model" --auto-split >"$work/misuse.out" 2>&1
[ $? -eq 2 ] || fail "serve --auto-split without --layers was not misuse"
ok

# ---- mesh 1: run --auto-split over B and C ----
want=$("$bin" run "$model" "$prompt" "${gen[@]}") || fail "whole-model run"
MESHLLM_HOME="$work/B" "$bin" mesh create >/dev/null 2>&1 || fail "mesh create"
MESHLLM_SPEED=3 MESHLLM_MEM_FREE_BYTES=64M start_node B --accept-stages
inviteB() { MESHLLM_HOME="$work/B" "$bin" invite --addr "$addr_B"; }
MESHLLM_SPEED=1 MESHLLM_MEM_FREE_BYTES=64M start_node C --accept-stages --join "$(inviteB)"
MESHLLM_SPEED=50 MESHLLM_MEM_FREE_BYTES=64G start_node D --join "$(inviteB)"
# R asks once the peers' announcements (accept_stages) have arrived
got=$(MESHLLM_LOG=info MESHLLM_HOME="$work/R" "$bin" run "$model" "$prompt" "${gen[@]}" --layers none \
    --auto-split --join "$(inviteB)" --p2p-listen /ip4/127.0.0.1/tcp/0 --no-mdns --route-wait 40 -v \
    2>"$work/R.err") || fail "run --auto-split failed"
[ "$got" = "$want" ] || fail "auto-split run text differs: '$got' vs '$want'"
ok
grep -q "stage 1: layers 0-3 on $id_B" "$work/R.err" || fail "B (3x faster) did not get layers 0-3"
grep -q "stage 2: layers 4-4 on $id_C" "$work/R.err" || fail "C did not get layer 4"
grep -q "loading layers 0-3 of stories260K" "$work/B.log" || fail "B did not log its load"
grep -q "stageload" "$work/D.log" && fail "D (no --accept-stages) was asked to load"
grep -q "asking $id_D" "$work/R.err" && fail "R asked D"
ok
# the stages stay: a second run finds them and asks nobody
got=$(MESHLLM_LOG=info MESHLLM_HOME="$work/R" "$bin" run "$model" "$prompt" "${gen[@]}" --layers none \
    --auto-split --p2p-listen /ip4/127.0.0.1/tcp/0 --no-mdns --route-wait 30 2>"$work/R2.err") ||
    fail "second run failed"
[ "$got" = "$want" ] || fail "second auto-split run differs"
grep -q "asking" "$work/R2.err" && fail "the second run asked for loads again"
loaded=$(curl -s "$url_B/node/peers" | node -e 'const j=JSON.parse(require("fs").readFileSync(0,"utf8"));process.stdout.write(String(j.mesh.stats.stageload_loaded))')
[ "$loaded" = 1 ] || fail "B counts $loaded loads, not 1"
ok
# recovery: C is killed in the middle of a run; the pass asks B to load layer 4 as well,
# replays the session onto it, and the text goes on exactly as a whole-model run's
want_long=$("$bin" run "$model" "$prompt" --temp 0 -n 100 --threads 1) || fail "whole-model run (long)"
MESHLLM_LOG=info MESHLLM_SCHED_STEP_DELAY_MS=30 MESHLLM_HOME="$work/R" "$bin" run "$model" "$prompt"     --temp 0 -n 100 --threads 1 --layers none --auto-split --p2p-listen /ip4/127.0.0.1/tcp/0     --no-mdns --route-wait 30 >"$work/R3.out" 2>"$work/R3.err" &
rpid=$!
for i in $(seq 400); do
    [ "$(wc -c <"$work/R3.out")" -ge 40 ] && break
    kill -0 "$rpid" 2>/dev/null || break
    sleep 0.02
done
[ "$(wc -c <"$work/R3.out")" -ge 40 ] || fail "the run printed nothing to interrupt"
kill -KILL "$pid_C"
wait "$rpid" || fail "the run failed after C was killed"
[ "$(cat "$work/R3.out")" = "$want_long" ] || fail "text after recovery differs: '$(cat "$work/R3.out")' vs '$want_long'"
grep -q "a stage of stories260K left" "$work/R3.err" || fail "R did not ask for the lost range"
grep -q "replaced" "$work/R3.err" || fail "R did not log the recovery"
grep -q "loading layers 4-4" "$work/B.log" || fail "B did not load layer 4"
ok

# ---- mesh 2: serve --auto-split; F has no file, E has it in its store ----
mkdir -p "$work/copy" "$work/storeE/blobs" "$work/storeE/manifests"
cp "$model16" "$work/copy/s16.gguf"
sha=$(sha256sum "$model16" | cut -d' ' -f1)
cid=$(python3 "$(dirname "$0")/util/merkle_ref.py" "$model16" 1048576 | cut -d" " -f1)
[ ${#cid} -eq 64 ] || fail "no content ID for the F16 file"
cp "$model16" "$work/storeE/blobs/$cid"
size=$(stat -c %s "$model16")
printf '{"name":"s16","tag":"latest","source":"test","size":%s,"content_id":"%s","sha256":"%s","piece_len":1048576,"added":0}' \
    "$size" "$cid" "$sha" >"$work/storeE/manifests/s16:latest.json"
MESHLLM_HOME="$work/E" "$bin" mesh create >/dev/null 2>&1 || fail "mesh create (E)"
MESHLLM_MODELS="$work/storeE" MESHLLM_SPEED=1 MESHLLM_MEM_FREE_BYTES=64M start_node E --accept-stages
inviteE() { MESHLLM_HOME="$work/E" "$bin" invite --addr "$addr_E"; }
ns_ok=1
unshare -m sh -c 'mount -t tmpfs none "$0"' "$work/copy" 2>/dev/null || ns_ok=
if [ -n "$ns_ok" ]; then
    NS=1 MESHLLM_MODELS="$work/storeF" MESHLLM_SPEED=1 MESHLLM_MEM_FREE_BYTES=64M start_node F --accept-stages --join "$(inviteE)"
else
    echo "note: no mount namespace here; F is left out"
fi
start_node W --model "$model16" --p2p # a whole node, in no mesh
body='{"model":"s16","messages":[{"role":"user","content":"Once upon a time"}],"temperature":0,"max_tokens":24}'
content() { node -e 'let j=JSON.parse(require("fs").readFileSync(0,"utf8"));process.stdout.write(j.choices[0].message.content)'; }
want16=$(curl -s "$url_W/v1/chat/completions" -H 'content-type: application/json' -d "${body/s16/stories260K-F16}" | content)
[ -n "$want16" ] || fail "the whole F16 node answered nothing"
# S waits a little before its first ask so that F's announcement is in (both are asked)
start_node S --model "$work/copy/s16.gguf" --layers none --auto-split --join "$(inviteE)"
got=""
for i in $(seq 200); do
    got=$(curl -s "$url_S/v1/chat/completions" -H 'content-type: application/json' -d "$body" | content 2>/dev/null) && [ -n "$got" ] && break
    got=""
    sleep 0.2
done
[ -n "$got" ] || fail "S never answered through auto-split stages"
[ "$got" = "$want16" ] || fail "serve --auto-split text differs: '$got' vs '$want16'"
ok
grep -q "blobs/$cid" "$work/E.log" || fail "E did not load from its store by content hash"
if [ -n "$ns_ok" ]; then
    grep -q "asking $id_F" "$work/S.log" || fail "S did not ask F"
    grep -q "$id_F did not load.*no file with SHA-256" "$work/S.log" || fail "F's refusal was not reported"
    grep -q "refused.*no file" "$work/F.log" || fail "F did not log its refusal"
fi
route=$(curl -s "$url_S/node/route?model=s16")
echo "$route" | grep -q "$id_E" || fail "the route does not use E: $route"
ok
echo "$pass passed, 0 failed"
