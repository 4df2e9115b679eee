#!/usr/bin/env bash
# store_pull.test.sh - the model store end to end: `meshllm pull` from a local Range-capable
# HTTP server (tests/util/range_server.py; never the Internet) serving a copy of
# stories260K.gguf: full pull, a cut mid-file resumed by itself, a cut left for the next
# run (partial kept, Range asked), wrong digests (server's and --sha256) refused with
# nothing in the store, a non-GGUF refused; list / show / rm; misuse exit 2; `run` and
# `serve` resolving a store name; the serve API's /api/pull, /api/tags, /api/copy,
# /api/delete, /api/create and load on first request. Prints "N passed, N failed".
set -u
bin=${MESHLLM_BIN:-build/meshllm}
models=${MESHLLM_TEST_MODELS:-../shared/models}
work=$(mktemp -d "${TMPDIR:-/tmp}/meshllm-store-XXXXXX")
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done; rm -rf "$work"; }
trap cleanup EXIT
passed=0
failed=0
check() { # description, then a command that must succeed
    local what=$1
    shift
    if "$@"; then passed=$((passed + 1)); else failed=$((failed + 1)); echo "FAIL: $what"; fi
}
export no_proxy=127.0.0.1,localhost NO_PROXY=127.0.0.1,localhost
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY ALL_PROXY all_proxy
export MESHLLM_MODELS=$work/store
www=$work/www
mkdir -p "$www"
cp "$models/stories260K.gguf" "$www/s.gguf"
sha=$(sha256sum "$www/s.gguf" | cut -c1-64)
echo "$sha" >"$www/s.gguf.sha256"
cp "$www/s.gguf" "$www/cut.gguf"; echo 400000 >"$www/cut.gguf.cut"
cp "$www/s.gguf" "$www/cut2.gguf"; echo 300000 >"$www/cut2.gguf.cut"
cp "$www/s.gguf" "$www/liar.gguf"; echo 0000000000000000000000000000000000000000000000000000000000000000 >"$www/liar.gguf.sha256"
head -c 5000 /dev/urandom >"$www/junk.gguf"
python3 tests/util/range_server.py "$www" "$work/port" "$work/log" &
pids+=($!)
for _ in $(seq 100); do [ -f "$work/port" ] && break; sleep 0.05; done
base=http://127.0.0.1:$(cat "$work/port")

# full pull, with the server's digest (X-Linked-ETag), name from the file name
out=$("$bin" pull "$base/s.gguf" 2>"$work/err")
check "pull exits 0" test $? = 0
check "pull prints the name" test "$out" = "s:latest"
check "pull says a final line when not a terminal" grep -q "^pulled s:latest: .*sha256 $sha" "$work/err"
cid=$(python3 tests/util/merkle_ref.py "$www/s.gguf" | cut -d' ' -f1)
check "blob named by its BEP 52 content ID" cmp -s "$www/s.gguf" "$MESHLLM_MODELS/blobs/$cid"
check "piece layer beside the blob (2 pieces)" test "$(stat -c %s "$MESHLLM_MODELS/blobs/$cid.pieces")" = 64
check "manifest written" grep -q "\"content_id\":.*\"$cid\"" "$MESHLLM_MODELS/manifests/s:latest.json"
check "nothing partial left" test -z "$(ls "$MESHLLM_MODELS/partial")"

# a cut mid-file: resumed by the same command with a Range request
: >"$work/log"
"$bin" pull "$base/cut.gguf" --name cut:v1 --sha256 "$sha" >/dev/null 2>"$work/err"
check "cut pull completes by itself" test $? = 0
check "resumed with Range from byte 400000" grep -q "^GET /cut.gguf bytes=400000-" "$work/log"
check "resumed file is bit-exact" cmp -s "$www/s.gguf" "$MESHLLM_MODELS/blobs/$cid"

# a cut with no retries: partial kept, the next run resumes it
: >"$work/log"
MESHLLM_PULL_RETRIES=0 "$bin" pull "$base/cut2.gguf" >/dev/null 2>"$work/err"
check "cut pull without retries exits 1" test $? = 1
check "and says how to resume" grep -q "run the same pull again to resume" "$work/err"
check "partial kept (300000 bytes)" test "$(cat "$MESHLLM_MODELS"/partial/*.part | wc -c)" = 300000
"$bin" pull "$base/cut2.gguf" >/dev/null 2>"$work/err"
check "second run completes" test $? = 0
check "second run asked for the rest" grep -q "^GET /cut2.gguf bytes=300000-" "$work/log"

# wrong digests: refused, nothing added, nothing partial left
n_blobs=$(ls "$MESHLLM_MODELS/blobs" | wc -l)
"$bin" pull "$base/liar.gguf" >/dev/null 2>"$work/err"
check "server's wrong digest: exit 1" test $? = 1
check "server's wrong digest: says so" grep -q "sha256 mismatch.*published by the server" "$work/err"
"$bin" pull "$base/s.gguf" --name other --sha256 "$(printf '1%.0s' {1..64})" >/dev/null 2>"$work/err"
check "--sha256 mismatch: exit 1 and says so" grep -q "sha256 mismatch.*--sha256" "$work/err"
"$bin" pull "$base/junk.gguf" >/dev/null 2>"$work/err"
check "not a GGUF: refused" grep -q "not a GGUF model file.*nothing was added" "$work/err"
check "no manifest for refused pulls" bash -c "! ls '$MESHLLM_MODELS/manifests' | grep -qE '^(liar|other|junk)'"
check "no blob for refused pulls" test "$(ls "$MESHLLM_MODELS/blobs" | wc -l)" = "$n_blobs"
check "no partial for refused pulls" test -z "$(ls "$MESHLLM_MODELS/partial")"
"$bin" pull "$base/missing.gguf" >/dev/null 2>"$work/err"
check "HTTP 404: clear message" grep -q "answered HTTP 404" "$work/err"
"$bin" pull ftp://x/y >/dev/null 2>"$work/err"
check "not a URL: says the forms" grep -q "hf:OWNER/REPO/FILE.gguf" "$work/err"

# list / show / rm
"$bin" list >"$work/list"
check "list shows the three names" bash -c "grep -q '^s:latest ' '$work/list' && grep -q '^cut:v1 ' '$work/list' && grep -q '^cut2:latest ' '$work/list'"
check "list --json" bash -c "'$bin' list --json | python3 -c 'import json,sys; assert len(json.load(sys.stdin)) == 3'"
"$bin" show s >"$work/show"
check "show: content ID, sha256, tensor types, chat template" bash -c \
    "grep -q '^content ID: *$cid' '$work/show' && grep -q '^sha256: *$sha' '$work/show' && grep -q '^tensor types: ' '$work/show' && grep -q '^chat template:' '$work/show'"
"$bin" show nope >/dev/null 2>"$work/err"
check "show of an unknown name: exit 1, hint" bash -c "[ \$? = 0 ] || true; grep -q 'not in the store.*meshllm list' '$work/err'"
check "run resolves a store name" bash -c "'$bin' run cut:v1 'Once' -n 4 --temp 0 >/dev/null 2>&1"
"$bin" rm cut:v1 >/dev/null
check "rm removes the name, keeps a shared blob" bash -c "! '$bin' list | grep -q '^cut:v1' && test -f '$MESHLLM_MODELS/blobs/$cid'"
"$bin" rm cut2 s >/dev/null
check "rm of the last names deletes the blob" test ! -e "$MESHLLM_MODELS/blobs/$cid"
"$bin" rm s >/dev/null 2>&1
check "rm of an unknown name exits 1" test $? = 1
for args in "pull" "pull a b" "pull --bogus x" "pull x --name" "list extra" "list --bogus" "show" "show a b" "rm" "rm --bogus"; do
    # shellcheck disable=SC2086
    "$bin" $args >/dev/null 2>&1
    check "misuse '$args' exits 2" test $? = 2
done
for c in pull list show rm; do
    check "$c --help exits 0 on stdout" bash -c "'$bin' $c --help | grep -q '^usage: meshllm $c'"
done
# a plain NAME.gguf in the folder still resolves by name
cp "$www/s.gguf" "$MESHLLM_MODELS/plain.gguf"
check "plain NAME.gguf still resolves" bash -c "'$bin' run plain 'Once' -n 2 >/dev/null 2>&1"

# the serve API over the store
"$bin" pull "$base/s.gguf" --name stored -q >/dev/null
"$bin" serve --host 127.0.0.1 --port 0 --threads 1 --model stored >"$work/serve.log" 2>&1 &
pids+=($!)
port=""
for _ in $(seq 200); do
    port=$(grep -oE 'API at http://127\.0\.0\.1:[0-9]+' "$work/serve.log" | grep -oE '[0-9]+$' | head -1)
    [ -n "$port" ] && break
    sleep 0.05
done
api=http://127.0.0.1:$port
for _ in $(seq 200); do [ "$(curl -s -o /dev/null -w '%{http_code}' "$api/health")" = 200 ] && break; sleep 0.05; done
post() { curl -s -H 'Content-Type: application/json' "$@"; }
check "serve resolves a store name" bash -c "curl -s '$api/api/tags' | grep -q '\"name\":\"stored:latest\".*\"digest\":\"$sha\"'"
post "$api/api/pull" -d "{\"model\":\"$base/s.gguf\",\"meshllm_name\":\"viaapi\"}" >"$work/pull.ndjson"
check "/api/pull streams Ollama's statuses" bash -c "head -1 '$work/pull.ndjson' | grep -q '\"status\":\"pulling manifest\"' && grep -q '\"digest\":\"sha256:$sha\",\"total\":1185376,\"completed\"' '$work/pull.ndjson' && tail -1 '$work/pull.ndjson' | grep -q '\"status\":\"success\"'"
check "/api/tags lists the pulled model with its digest" bash -c "curl -s '$api/api/tags' | grep -q '\"name\":\"viaapi:latest\",\"model\":\"viaapi:latest\",.*\"digest\":\"sha256:$sha\"'"
code=$(post -o "$work/body" -w '%{http_code}' "$api/api/pull" -d "{\"model\":\"$base/liar.gguf\",\"stream\":false}")
check "/api/pull stream:false of a liar: 400 {error}" bash -c "[ $code = 400 ] && grep -q '^{\"error\":\".*sha256 mismatch' '$work/body'"
check "/api/copy" test "$(post -o /dev/null -w '%{http_code}' "$api/api/copy" -d '{"source":"viaapi","destination":"copied:v2"}')" = 200
code=$(post -o "$work/body" -w '%{http_code}' "$api/api/generate" -d '{"model":"copied:v2","prompt":"Once","stream":false,"options":{"num_predict":3}}')
check "first request for a store model waits for its load, then answers" bash -c "[ $code = 200 ] && grep -q '\"done\":true' '$work/body'"
check "/api/create from a GGUF on disk" bash -c "curl -s -H 'Content-Type: application/json' '$api/api/create' -d '{\"model\":\"made\",\"from\":\"$www/s.gguf\",\"stream\":false}' | grep -q success && '$bin' list | grep -q '^made:latest'"
check "/api/delete" test "$(curl -s -o /dev/null -w '%{http_code}' -X DELETE -H 'Content-Type: application/json' "$api/api/delete" -d '{"model":"copied:v2"}')" = 200
check "/api/delete of an unknown name: 404" test "$(curl -s -o /dev/null -w '%{http_code}' -X DELETE -H 'Content-Type: application/json' "$api/api/delete" -d '{"model":"copied:v2"}')" = 404
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
