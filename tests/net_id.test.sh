#!/usr/bin/env bash
# net_id.test.sh - `meshllm id`: creates the identity key once (mode 0600), prints the same
# 12D3KooW... peer ID every time, honours --data-dir and MESHLLM_HOME, rejects misuse.
set -u
bin=${MESHLLM_BIN:-build/meshllm}
work=$(mktemp -d "${TMPDIR:-/tmp}/meshllm-id-XXXXXX")
trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

a=$("$bin" id --data-dir "$work/a") || fail "id --data-dir failed"
[[ $a =~ ^12D3KooW[1-9A-HJ-NP-Za-km-z]{44}$ ]] || fail "not an Ed25519 peer ID: '$a'"
[ "$(stat -c %a "$work/a/identity.key")" = 600 ] || fail "key file is not mode 600"
[ "$(stat -c %a "$work/a")" = 700 ] || fail "data dir is not mode 700"
a2=$("$bin" id --data-dir "$work/a") || fail "second run failed"
[ "$a" = "$a2" ] || fail "peer ID changed between runs: $a vs $a2"
b=$(MESHLLM_HOME="$work/b" "$bin" id) || fail "id with MESHLLM_HOME failed"
[ "$a" != "$b" ] || fail "two data dirs gave the same ID"
[ -f "$work/b/identity.key" ] || fail "MESHLLM_HOME not used"
chmod 644 "$work/a/identity.key"
"$bin" id --data-dir "$work/a" 2>"$work/err" && fail "accepted a world-readable key"
grep -q "chmod 600" "$work/err" || fail "no actionable message: $(cat "$work/err")"
"$bin" id --bogus >/dev/null 2>&1
[ $? = 2 ] || fail "misuse must exit 2"
"$bin" id --help | grep -q "usage: meshllm id" || fail "--help"
# With the node running (serve --p2p on loopback, same data dir), id adds its addresses.
models=${MESHLLM_TEST_MODELS:-../shared/models}
"$bin" serve --model "$models/stories260K.gguf" --host 127.0.0.1 --port 0 --p2p \
    --p2p-listen /ip4/127.0.0.1/tcp/0 --no-mdns --data-dir "$work/b" >"$work/serve.log" 2>&1 &
spid=$!
trap 'kill $spid 2>/dev/null; wait $spid 2>/dev/null; rm -rf "$work"' EXIT
port=""
for _ in $(seq 100); do
    port=$(grep -oE 'API at http://127\.0\.0\.1:[0-9]+' "$work/serve.log" | grep -oE '[0-9]+$' || true)
    [ -n "$port" ] && grep -q "$b" "$work/serve.log" && break
    sleep 0.1
done
[ -n "$port" ] || fail "serve did not start: $(cat "$work/serve.log")"
out=$(MESHLLM_HOME="$work/b" "$bin" id --url "http://127.0.0.1:$port") || fail "id --url failed"
echo "$out" | grep -qE "^/ip4/127\.0\.0\.1/tcp/[0-9]+/p2p/$b\$" || fail "no listen address from the running node: $out"
[ "$(echo "$out" | head -1)" = "$b" ] || fail "first line is not the peer ID: $out"
echo "id ok: $a"
