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
echo "id ok: $a"
