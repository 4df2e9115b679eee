#!/usr/bin/env bash
# mesh_share.test.sh - models shared between mesh members over /meshllm/blob/1, with real
# `meshllm serve --p2p` processes on 127.0.0.1. P1 creates the mesh; P2 and L join; all three
# hold the same random-weight GGUF (made by bench/mkmodel in a temp dir, ~20 MiB) in their
# stores and announce it; L runs with MESHLLM_TEST_CORRUPT_BLOB=1 (test-only: it flips a
# byte of every piece it sends). A (a fourth member, lite) pulls it by name with
# `meshllm pull NAME --url A`: the file arrives bit-exact (cmp), L is dropped and scored as a
# liar (log, /node/peers, /metrics). The ollama npm client pulls it too. Then a partial file as an interrupted pull leaves it
# (half the pieces, one of them damaged) is resumed through /api/pull's NDJSON: the valid
# pieces are kept, the rest fetched; and a pull cut by a SIGKILL of A resumes after A's
# restart. X, a member of another mesh, is refused by P1.
# Prints "N passed, N failed".
set -u
source "$(dirname "$0")/e2e/server.sh"
e2e_npm || { echo "npm ci failed"; exit 1; }
bin=$MESHLLM_BIN
build=$(dirname "$bin")
work=$E2E_TMP
passed=0
failed=0
check() { # description, then a command that must succeed
    local what=$1
    shift
    if "$@"; then passed=$((passed + 1)); else failed=$((failed + 1)); echo "FAIL: $what"; fi
}
die() {
    echo "FAIL: $*"
    for f in "$work"/*.log; do [ -f "$f" ] && { echo "== $f"; tail -n 15 "$f"; }; done
    echo "$passed passed, $((failed + 1)) failed"
    exit 1
}
export no_proxy=127.0.0.1,localhost NO_PROXY=127.0.0.1,localhost
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY ALL_PROXY all_proxy

model=$work/share.gguf
"$build/bench/mkmodel" --arch llama --dim 256 --layers 2 --heads 4 --kv-heads 2 --ff 768 \
    --vocab "$MESHLLM_TEST_MODELS/llamacpp-vocab/ggml-vocab-llama-spm.gguf" --type Q8_0 \
    -o "$model" >/dev/null 2>&1 || die "mkmodel failed"

# start_node NAME [serve args...]: `serve --p2p` with home and store under $work/NAME; sets
# url_NAME, id_NAME, addr_NAME.
start_node() {
    local name=$1
    shift
    MESHLLM_LOG=info MESHLLM_HOME="$work/$name" MESHLLM_MODELS="$work/$name/models" \
        "$bin" serve --host 127.0.0.1 --port 0 --threads 1 --p2p \
        --p2p-listen /ip4/127.0.0.1/tcp/0 --no-mdns "$@" >"$work/$name.log" 2>&1 &
    local pid=$! port="" i
    E2E_PIDS+=("$pid")
    printf -v "pid_$name" '%s' "$pid"
    for i in $(seq 200); do
        port=$(grep -oE 'API at http://127\.0\.0\.1:[0-9]+' "$work/$name.log" | grep -oE '[0-9]+$' | head -1)
        [ -n "$port" ] && break
        kill -0 "$pid" 2>/dev/null || die "$name exited"
        sleep 0.05
    done
    [ -n "$port" ] || die "$name printed no API address"
    printf -v "url_$name" 'http://127.0.0.1:%s' "$port"
    printf -v "id_$name" '%s' "$(sed -n 's/^meshllm: peer ID //p' "$work/$name.log")"
    printf -v "addr_$name" '%s' "$(sed -n 's/^meshllm: p2p listening on //p' "$work/$name.log" | head -1)"
}
wait_for() { # SECONDS COMMAND...: retries COMMAND every 0.2 s
    local s=$1 i
    shift
    for i in $(seq $((s * 5))); do "$@" && return 0; sleep 0.2; done
    return 1
}
peers_json() { local u="url_$1"; curl -s "${!u}/node/peers"; }
blob_stat() { # NAME FIELD: a counter of mesh.stats.blob on NAME
    peers_json "$1" | python3 -c 'import json,sys; print(int(json.load(sys.stdin)["mesh"]["stats"]["blob"][sys.argv[1]]))' "$2"
}
add_model() { # NODE [NAME FILE]: puts FILE (share.gguf) into NODE's store as NAME (share)
    local u="url_$1"
    curl -s -H 'Content-Type: application/json' "${!u}/api/create" \
        -d "{\"model\":\"${2:-share}\",\"from\":\"${3:-$model}\",\"stream\":false}" | grep -q success
}
n_providers() { # [NAME]: how many members A's table shows announcing NAME:latest (share)
    peers_json A | python3 -c '
import json, sys
j = json.load(sys.stdin)
print(sum(1 for p in j["mesh"]["peers"] if p["member"] and p["announced"] and any(b["name"] == sys.argv[1] + ":latest" for b in p.get("blobs", []))))' "${1:-share}"
}

MESHLLM_HOME="$work/P1" "$bin" mesh create >/dev/null 2>&1 || die "mesh create"
start_node P1
invite() { MESHLLM_HOME="$work/P1" "$bin" invite --addr "$addr_P1"; }
for n in P2 L A; do
    MESHLLM_HOME="$work/$n" "$bin" join "$(invite)" >"$work/join$n.out" 2>&1 || die "join $n: $(cat "$work/join$n.out")"
done
start_node P2 --bootstrap "$addr_P1"
MESHLLM_TEST_CORRUPT_BLOB=1 start_node L --bootstrap "$addr_P1"
start_node A --bootstrap "$addr_P1"
MESHLLM_HOME="$work/X" "$bin" mesh create >/dev/null 2>&1 || die "mesh create X"
start_node X --bootstrap "$addr_P1"
for n in P1 P2 L; do add_model $n || die "/api/create on $n"; done
cid=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["content_id"])' "$work/P1/models/manifests/share:latest.json")
check "the content ID is 64 hex digits" test ${#cid} -eq 64
grep -q "MESHLLM_TEST_CORRUPT_BLOB=1" "$work/L.log" || die "L did not say it is a test liar"

three() { [ "$(n_providers)" = 3 ]; }
wait_for 30 three || die "A never heard the three providers' announcements (has $(n_providers))"
check "meshllm peers lists what members provide" bash -c \
    "'$bin' peers --url '$url_A' | grep -q 'provides share:latest'"

# The pull by name, through A's API, from P1, P2 and the liar L at once.
t0=$(date +%s.%N)
"$bin" pull share --url "$url_A" >"$work/pull1.out" 2>"$work/pull1.err" || die "pull: $(cat "$work/pull1.err")"
t1=$(date +%s.%N)
check "pull prints the stored name" grep -qx "share:latest" "$work/pull1.out"
check "the file arrived bit-exact" cmp -s "$model" "$work/A/models/blobs/$cid"
check "the store lists it on A" bash -c "MESHLLM_MODELS='$work/A/models' '$bin' list | grep -q '^share:latest'"
check "its manifest has the file's SHA-256" grep -q "\"sha256\":[[:space:]]*\"$(sha256sum "$model" | cut -c1-64)\"" \
    "$work/A/models/manifests/share:latest.json"
check "the piece layer was kept" cmp -s "$work/P1/models/blobs/$cid.pieces" "$work/A/models/blobs/$cid.pieces"
check "the liar's bad piece was seen" test "$(blob_stat A bad_pieces)" -ge 1
check "the liar was dropped (log)" grep -q "provider $id_L dropped: piece .* did not verify" "$work/A.log"
liar_lies() {
    peers_json A | python3 -c '
import json, sys
j = json.load(sys.stdin)
p = [p for p in j["mesh"]["peers"] if p["id"] == sys.argv[1]]
sys.exit(0 if p and p[0]["lies"] >= 1 else 1)' "$id_L"
}
check "the liar is scored down in the peer table" liar_lies
check "/metrics counts bad pieces and fetched bytes" bash -c \
    "curl -s '$url_A/metrics' | grep -qE '^meshllm_blob_pieces_total\\{outcome=\"bad\"\\} [1-9]' &&
     curl -s '$url_A/metrics' | grep -qE '^meshllm_blob_bytes_total\\{dir=\"fetched\"\\} [1-9]'"
served=0
for n in P1 P2; do served=$((served + $(blob_stat $n pieces_served))); done
n_pieces=$((($(stat -c %s "$model") + (1 << 20) - 1) >> 20))
check "honest providers served every piece" test "$served" -ge "$n_pieces"
check "both honest providers took part" bash -c "[ $(blob_stat P1 pieces_served) -gt 0 ] && [ $(blob_stat P2 pieces_served) -gt 0 ]"

# Resume: a partial file as an interrupted pull leaves it, piece 2 damaged.
curl -s -X DELETE -H 'Content-Type: application/json' "$url_A/api/delete" -d '{"model":"share"}' >/dev/null
check "delete removed the blob" test ! -e "$work/A/models/blobs/$cid"
part="$work/A/models/partial/$cid.blobpart"
head -c $((6 << 20)) "$model" >"$part"
printf 'XXXX' | dd of="$part" bs=1 seek=$(((2 << 20) + 100)) conv=notrunc 2>/dev/null
before=$(blob_stat A pieces_resumed)
curl -s -N -H 'Content-Type: application/json' "$url_A/api/pull" -d '{"model":"share"}' >"$work/pull2.ndjson"
check "the NDJSON pull ended in success" grep -q '"status":"success"' "$work/pull2.ndjson"
check "the NDJSON carries completed/total" grep -q '"completed":' "$work/pull2.ndjson"
check "five valid pieces were resumed" test $(($(blob_stat A pieces_resumed) - before)) -eq 5
check "the resumed file is bit-exact" cmp -s "$model" "$work/A/models/blobs/$cid"
check "the partial file is gone" test ! -e "$part"

# The official ollama npm client pulls it from the mesh (tests/e2e/share.test.mjs).
curl -s -X DELETE -H 'Content-Type: application/json' "$url_A/api/delete" -d '{"model":"share"}' >/dev/null
check "the ollama client pulls from the mesh" env MESHLLM_URL="$url_A" MESHLLM_SHARE_SIZE="$(stat -c %s "$model")" \
    MESHLLM_SHARE_SHA="$(sha256sum "$model" | cut -c1-64)" \
    node --test --test-concurrency=1 "$E2E_DIR/share.test.mjs"
check "... bit-exact" cmp -s "$model" "$work/A/models/blobs/$cid"

# A real interruption: A is killed (SIGKILL) in the middle of a pull of a bigger file, then
# restarted; the same pull keeps what had arrived and verifies.
big=$work/big.gguf
"$build/bench/mkmodel" --arch llama --dim 512 --layers 1 --heads 8 --kv-heads 4 --ff 1408 \
    --vocab "$MESHLLM_TEST_MODELS/llamacpp-vocab/ggml-vocab-llama-spm.gguf" --type F16 \
    -o "$big" >/dev/null 2>&1 || die "mkmodel big failed"
for n in P1 P2; do add_model $n big "$big" || die "/api/create big on $n"; done
two_big() { [ "$(n_providers big)" = 2 ]; }
wait_for 30 two_big || die "A never heard of big from P1 and P2"
curl -s -N -H 'Content-Type: application/json' "$url_A/api/pull" -d '{"model":"big"}' >"$work/big1.ndjson" 2>/dev/null &
cpid=$!
midway() { grep -qE '"completed":[1-9]' "$work/big1.ndjson"; }
for i in $(seq 1500); do midway && break; sleep 0.02; done
midway || die "no progress line with completed > 0: $(head -c 300 "$work/big1.ndjson")"
kill -KILL "$pid_A"
wait "$cpid" 2>/dev/null
check "the kill came mid-pull (no manifest yet)" test ! -e "$work/A/models/manifests/big:latest.json"
big_cid=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["content_id"])' "$work/P1/models/manifests/big:latest.json")
check "the partial file stayed" test -s "$work/A/models/partial/$big_cid.blobpart"
start_node A --bootstrap "$addr_P1"
wait_for 30 two_big || die "the restarted A never heard of big again"
"$bin" pull big --url "$url_A" >"$work/pull3.out" 2>"$work/pull3.err" || die "pull after restart: $(cat "$work/pull3.err")"
check "the pull after the restart resumed pieces" test "$(blob_stat A pieces_resumed)" -ge 1
check "... and fetched only the rest" test "$(blob_stat A pieces_fetched)" -lt $((($(stat -c %s "$big") + (1 << 20) - 1) >> 20))
check "... bit-exact" cmp -s "$big" "$work/A/models/blobs/$big_cid"

# X, a member of another mesh, asks P1 directly by content ID: refused.
refused_before=$(blob_stat P1 streams)
curl -s -H 'Content-Type: application/json' "$url_X/api/pull" \
    -d "{\"model\":\"$cid\",\"stream\":false,\"meshllm_peers\":[\"$addr_P1\"]}" >"$work/pullX.json"
check "the non-member's pull failed" grep -q '"error"' "$work/pullX.json"
check "P1 served the non-member nothing" test "$(blob_stat P1 streams)" -eq "$refused_before"
check "P1 refused it at admission" grep -q "$id_X refused" "$work/P1.log"
check "X stored nothing" test ! -e "$work/X/models/blobs/$cid"

echo "pull of $(stat -c %s "$model") bytes from 3 providers: $(echo "$t1 - $t0" | bc) s" >&2
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
