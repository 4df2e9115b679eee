#!/usr/bin/env bash
# split_run.test.sh - `meshllm run` and `meshllm chat` on a split model, with real processes
# on 127.0.0.1: B creates a mesh and serves layers 0-1 of stories260K, C serves 2-4. A run
# with --layers none (embedding and head only) joins with an invite and prints, greedily,
# exactly what a whole-model run prints (text and token ids); so does a run that holds
# layers 0-1 itself (a 2-hop route: its own range, then C); so does `run --mesh` with too
# little free memory for the file (MESHLLM_MEM_FREE_BYTES), which holds what fits. A chat
# of two turns through the stages answers what a whole-model chat answers. With no stage
# for some layers, run fails after --route-wait with the missing layers named (exit 1). A
# split run with --grammar and --chat-template prints what a whole-model run with them prints.
# Every process is stopped on exit.
set -u
source "$(dirname "$0")/e2e/server.sh"
bin=$MESHLLM_BIN
model=$MESHLLM_TEST_MODELS/stories260K.gguf
work=$E2E_TMP
pass=0
fail() {
    echo "FAIL: $*"
    for f in "$work"/*.log "$work"/*.err; do [ -f "$f" ] && { echo "== $f"; tail -n 25 "$f"; }; done
    exit 1
}
ok() { pass=$((pass + 1)); }

# start_node NAME [serve args...]: sets pid_NAME, id_NAME, addr_NAME
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
    printf -v "pid_$name" '%s' "$pid"
    printf -v "id_$name" '%s' "$(sed -n 's/^meshllm: peer ID //p' "$work/$name.log")"
    printf -v "addr_$name" '%s' "$(sed -n 's/^meshllm: p2p listening on //p' "$work/$name.log" | head -1)"
}
invite() { MESHLLM_HOME="$work/B" "$bin" invite --addr "$addr_B"; }
prompt="Once upon a time"
gen=(--temp 0 -n 40 --threads 1)
# rrun NAME [run args...]: a run as a member of B's mesh (its own data dir), quiet p2p
rrun() {
    local name=$1
    shift
    MESHLLM_HOME="$work/$name" "$bin" run "$model" "$prompt" "${gen[@]}" \
        --p2p-listen /ip4/127.0.0.1/tcp/0 --no-mdns --route-wait 20 "$@" 2>"$work/$name.err"
}

want=$("$bin" run "$model" "$prompt" "${gen[@]}") || fail "whole-model run"
want_ids=$("$bin" run "$model" "$prompt" "${gen[@]}" --ids) || fail "whole-model run --ids"
[ -n "$want" ] || fail "the whole-model run printed nothing"

"$bin" run "$model" "$prompt" --layers 2-x >"$work/misuse.out" 2>&1
[ $? -eq 2 ] || fail "run --layers 2-x was not misuse"
grep -q "say A-B" "$work/misuse.out" || fail "no hint for a bad --layers"
"$bin" run "$model" "$prompt" --auto-split >"$work/misuse2.out" 2>&1
[ $? -eq 2 ] || fail "run --auto-split without --layers/--mesh was not misuse"
ok

MESHLLM_HOME="$work/B" "$bin" mesh create >/dev/null 2>&1 || fail "mesh create"
start_node B --model "$model" --layers 0-1
# before C exists, layers 2-4 have no stage: run gives up after --route-wait, naming them
rrun R0 --layers none --join "$(invite)" --route-wait 4 >"$work/R0.out"
[ $? -eq 1 ] || fail "run without a stage for 2-4 did not fail (exit 1)"
# (0-4 when B's announcement had not reached it yet: also the truth)
grep -qE "no mesh member announces layers (2-4|0-4)" "$work/R0.err" ||
    fail "the failure does not name the missing layers: $(cat "$work/R0.err")"
grep -q "meshllm serve --model .* --layers" "$work/R0.err" || fail "no hint to start a stage"
ok
start_node C --model "$model" --layers 2-4 --join "$(invite)"

got=$(rrun R1 --layers none --join "$(invite)") || fail "split run failed"
[ "$got" = "$want" ] || fail "split run text differs: '$got' vs '$want'"
ok
# the same data dir is a member already: no invite needed, ids as well
got_ids=$(rrun R1 --layers none --ids) || fail "split run --ids failed"
[ "$got_ids" = "$want_ids" ] || fail "split run ids differ: '$got_ids' vs '$want_ids'"
ok
# a grammar and a chat template reach the route's generation as they reach a whole model's
g='root ::= [a-z ]+'
want_g=$("$bin" run "$model" "$prompt" "${gen[@]}" --grammar "$g" --chat-template chatml) ||
    fail "whole-model run --grammar --chat-template"
got_g=$(rrun R1 --layers none --grammar "$g" --chat-template chatml) || fail "split run --grammar failed"
[ -n "$want_g" ] && [ "$want_g" != "$want" ] || fail "the grammar changed nothing: '$want_g'"
[ "$got_g" = "$want_g" ] || fail "split run --grammar text differs: '$got_g' vs '$want_g'"
ok
# holding layers 0-1 itself: the route is its own range, then C (B's 0-1 is not needed)
got=$(rrun R2 --layers 0-1 --join "$(invite)" -v) || fail "run --layers 0-1 failed"
[ "$got" = "$want" ] || fail "run --layers 0-1 text differs: '$got' vs '$want'"
grep -q "stage 1: layers 0-1 on this node" "$work/R2.err" || fail "R2 did not run 0-1 itself: $(cat "$work/R2.err")"
grep -q "stage 2: layers 2-4 on $id_C" "$work/R2.err" || fail "R2 did not use C for 2-4"
ok
# --mesh with too little memory for the whole file: holds what fits, the rest from the mesh
got=$(MESHLLM_MEM_FREE_BYTES=600K rrun R3 --mesh --join "$(invite)" -v) || fail "run --mesh failed"
[ "$got" = "$want" ] || fail "run --mesh text differs: '$got' vs '$want'"
grep -q "does not fit in free memory" "$work/R3.err" || fail "run --mesh did not say why it split"
# with the memory it needs, --mesh runs the model whole (no route)
got=$(MESHLLM_HOME="$work/R3" "$bin" run "$model" "$prompt" "${gen[@]}" --mesh -v 2>"$work/R3b.err") || fail "run --mesh (fits)"
[ "$got" = "$want" ] || fail "run --mesh (fits) text differs"
grep -q "does not fit" "$work/R3b.err" && fail "run --mesh split a model that fits"
ok

# chat: two turns through the stages equal a whole-model chat
turns=$'Hello there\nTell me a story'
want_chat=$(printf '%s\n' "$turns" | "$bin" chat "$model" --temp 0 -n 24 --threads 1 2>/dev/null) || fail "whole-model chat"
got_chat=$(printf '%s\n' "$turns" | MESHLLM_HOME="$work/R1" "$bin" chat "$model" --temp 0 -n 24 --threads 1 \
    --layers none --p2p-listen /ip4/127.0.0.1/tcp/0 --no-mdns --route-wait 20 2>"$work/chat.err") || fail "split chat failed"
[ -n "$want_chat" ] || fail "the whole-model chat answered nothing"
[ "$got_chat" = "$want_chat" ] || fail "split chat differs: '$got_chat' vs '$want_chat'"
ok
echo "$pass passed, 0 failed"
