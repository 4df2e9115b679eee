#!/usr/bin/env bash
# mesh_delegate.test.sh - a private mesh of real `meshllm serve` processes on 127.0.0.1:
# B creates the mesh and holds stories260K, C joins with an invite and holds it too, A joins
# and is a lite node (no model, route mesh), D is a libp2p node with no certificate and E a
# member of ANOTHER mesh, both pointed at B, L is
# a member started with --route local. The official openai SDK against A (tests/e2e/
# mesh.test.mjs): answers come from B or C and say so (a JSON-schema request stays
# constrained on the peer); SIGKILL of the serving peer
# mid-stream and the stream completes from the other with the text of a single-node run.
# Then: D and E were refused (B counts them, they hear no announcement, B lists no model of
# theirs), L
# never opens an infer stream, forged/reused/expired invites are refused by `meshllm join`.
# Every process is stopped on exit.
set -u
source "$(dirname "$0")/e2e/server.sh"
e2e_npm || { echo "npm ci failed"; exit 1; }
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

# start_node NAME [serve args...]: starts `serve` for NAME (home $work/NAME) on free ports and sets
# url_NAME, id_NAME, addr_NAME, pid_NAME.
start_node() {
    local name=$1
    shift
    MESHLLM_LOG=info MESHLLM_HOME="$work/$name" "$bin" serve --host 127.0.0.1 --port 0 --threads 1 --slots 2 \
        --p2p --p2p-listen /ip4/127.0.0.1/tcp/0 --no-mdns "$@" >"$work/$name.log" 2>&1 &
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
# peers_json NAME: GET /node/peers of NAME
peers_json() { local u="url_$1"; curl -s "${!u}/node/peers"; }
# wait_for SECONDS COMMAND...: retries COMMAND every 0.2 s
wait_for() {
    local s=$1 i
    shift
    for i in $(seq $((s * 5))); do "$@" && return 0; sleep 0.2; done
    return 1
}
serves_model() { # NAME PEER_ID: NAME's table has PEER_ID announcing stories260K
    peers_json "$1" | node -e '
      let j = JSON.parse(require("fs").readFileSync(0, "utf8"));
      let p = (j.mesh?.peers ?? []).find((x) => x.id === process.argv[1]);
      process.exit(p && p.member && p.announced && p.models.some((m) => m.name === "stories260K") ? 0 : 1);
    ' "$2"
}

# The mesh: B creates it and serves; every other member joins with an invite from B.
MESHLLM_HOME="$work/B" "$bin" mesh create >"$work/create.out" 2>&1 || fail "mesh create"
grep -q "mesh-" "$work/create.out" || fail "mesh create printed no mesh ID"
ok
export MESHLLM_SCHED_STEP_DELAY_MS=4 # paces generation so a peer can be killed mid-stream
start_node B --model "$model"
invite() { MESHLLM_HOME="$work/B" "$bin" invite --addr "$addr_B" "$@"; }
tok_C=$(invite) || fail "invite"
[[ $tok_C =~ ^meshllm-invite: ]] || fail "invite printed '$tok_C'"
MESHLLM_HOME="$work/C" "$bin" join "$tok_C" >"$work/joinC.out" 2>&1 || fail "join C: $(cat "$work/joinC.out")"
# A single-use invite cannot be used twice, even by another node.
MESHLLM_HOME="$work/X" "$bin" join "$tok_C" >"$work/joinX.out" 2>&1 && fail "an invite was used twice"
grep -qi "used" "$work/joinX.out" || fail "no reason for the reused invite: $(cat "$work/joinX.out")"
# A tampered token and an expired one are refused too.
mid=$((${#tok_C} / 2))
[ "${tok_C:$mid:1}" = A ] && r=B || r=A
MESHLLM_HOME="$work/X" "$bin" join "${tok_C:0:$mid}$r${tok_C:$((mid + 1))}" >/dev/null 2>&1 &&
    fail "a tampered invite was accepted"
tok_old=$(invite --expires 1s) || fail "invite --expires"
sleep 2
MESHLLM_HOME="$work/X" "$bin" join "$tok_old" >"$work/joinX.out" 2>&1 && fail "an expired invite was accepted"
grep -qi "expired" "$work/joinX.out" || fail "no reason for the expired invite: $(cat "$work/joinX.out")"
ok
start_node C --model "$model" --bootstrap "$addr_B"
unset MESHLLM_SCHED_STEP_DELAY_MS
tok_A=$(invite)
start_node A --join "$tok_A" # no --bootstrap: the invite names B
grep -q "route mesh" "$work/A.log" || fail "the lite node did not say its route is mesh"
MESHLLM_HOME="$work/L" "$bin" join "$(invite)" >/dev/null 2>&1 || fail "join L"
start_node L --route local --bootstrap "$addr_B"
# D: a valid libp2p identity and no certificate; E: a member of another mesh.
start_node D --model "$model" --bootstrap "$addr_B"
MESHLLM_HOME="$work/E" "$bin" mesh create >/dev/null 2>&1 || fail "mesh create E"
start_node E --model "$model" --bootstrap "$addr_B"
ok

wait_for 30 serves_model A "$id_B" || fail "A never heard B's announcement"
wait_for 30 serves_model A "$id_C" || fail "A never heard C's announcement"
ok

# Announcements carry the model's content hash: A lists the SHA-256 of B's file.
want_digest=$(sha256sum "$model" | cut -d' ' -f1)
digest_on_A() { curl -s "$url_A/api/tags" | grep -q "\"digest\":\"$want_digest\""; }
wait_for 20 digest_on_A || fail "A's /api/tags lacks the model's sha256: $(curl -s "$url_A/api/tags")"
ok

# `meshllm status` and `meshllm peers` on the lite node show the mesh, its members and models.
"$bin" status --url "$url_A" >"$work/status.out" 2>&1 || fail "status: $(cat "$work/status.out")"
grep -q "^mesh      mesh-" "$work/status.out" || fail "status shows no mesh: $(cat "$work/status.out")"
grep -q "^route     mesh" "$work/status.out" || fail "status shows no route: $(cat "$work/status.out")"
grep -E "^stories260K .*$id_B" "$work/status.out" | grep -q "$id_C" ||
    fail "status does not say stories260K runs on B and C: $(cat "$work/status.out")"
"$bin" peers --url "$url_A" >"$work/peers.out" 2>&1 || fail "peers: $(cat "$work/peers.out")"
grep -E "^$id_B +owner +connected .*stories260K" "$work/peers.out" >/dev/null ||
    fail "peers does not list B as the owner device serving stories260K: $(cat "$work/peers.out")"
ok

# D (no certificate) and E (another mesh's member), pointed at B, were refused by B and heard
# nothing of the mesh.
b_refused_two() { peers_json B | grep -qE '"refused":([2-9]|[1-9][0-9])'; }
wait_for 20 b_refused_two || fail "B did not refuse both D and E: $(peers_json B)"
for x in D E; do
    xj=$(peers_json $x)
    echo "$xj" | grep -q '"announces_received":0' || fail "$x received announcements: $xj"
    echo "$xj" | grep -q '"admitted":0' || fail "$x admitted someone: $xj"
    idv="id_$x"
    peers_json B | node -e '
      let j = JSON.parse(require("fs").readFileSync(0, "utf8"));
      let d = (j.mesh?.peers ?? []).find((p) => p.id === process.argv[1]);
      process.exit(d && (d.member || d.announced || d.models.length) ? 1 : 0);' "${!idv}" ||
        fail "B counts $x as a member or lists its models"
done
grep -q "refused: no membership certificate" "$work/B.log" || fail "B did not say why D was refused"
ok

MESHLLM_URL=$url_A MESHLLM_BIN=$bin MESHLLM_MODEL_PATH=$model \
    MESHLLM_PEERS="{\"$id_B\":{\"pid\":$pid_B,\"url\":\"$url_B\"},\"$id_C\":{\"pid\":$pid_C,\"url\":\"$url_C\"}}" \
    node --test --test-concurrency=1 "$E2E_DIR/mesh.test.mjs" >"$work/mesh.test.log" 2>&1 ||
    { cat "$work/mesh.test.log"; fail "mesh.test.mjs"; }
cat "$work/mesh.test.log" | grep -E '^# (pass|fail)'
pass=$((pass + $(sed -n 's/^# pass //p' "$work/mesh.test.log")))

# L (route local, a member) answers 404 for the mesh's model and opened no infer stream.
code=$(curl -s -o "$work/L.out" -w '%{http_code}' "$url_L/v1/chat/completions" -H 'content-type: application/json' \
    -d '{"model":"stories260K","messages":[{"role":"user","content":"hi"}],"max_tokens":4}')
[ "$code" = 404 ] || fail "L answered $code: $(cat "$work/L.out")"
peers_json L | grep -q '"infer_out":0' || fail "L opened an infer stream"
ok
# A restarted with the same (spent) --join token: already a member, so it just starts.
kill -TERM "$pid_A"
for i in $(seq 100); do kill -0 "$pid_A" 2>/dev/null || break; sleep 0.05; done
start_node A --join "$tok_A"
grep -q "^meshllm: member of mesh mesh-" "$work/A.log" || fail "A did not restart with its spent invite"
ok
echo "$pass passed, 0 failed"
