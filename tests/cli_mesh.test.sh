#!/usr/bin/env bash
# cli_mesh.test.sh - `meshllm mesh create|show`, `invite`, `revoke`: one mesh per data dir,
# the owner key at 0600, a token printed, revoke refused without the owner key, misuse exit 2,
# --help on stdout with exit 0. Prints "N passed, N failed".
set -u
bin=${MESHLLM_BIN:-build/meshllm}
work=$(mktemp -d "${TMPDIR:-/tmp}/meshllm-mesh-XXXXXX")
trap 'rm -rf "$work"' EXIT
passed=0
failed=0
check() { # description, then a command that must succeed
    local what=$1
    shift
    if "$@"; then passed=$((passed + 1)); else failed=$((failed + 1)); echo "FAIL: $what"; fi
}
a="$work/a"
b="$work/b"

id=$("$bin" mesh create --data-dir "$a" 2>"$work/err")
check "mesh create exits 0" test $? = 0
check "mesh create prints the mesh ID ($id)" bash -c "[[ '$id' =~ ^mesh-[a-z2-7]{26}\$ ]]"
check "owner key is 0600" test "$(stat -c %a "$a/mesh/owner.key")" = 600
"$bin" mesh create --data-dir "$a" >/dev/null 2>"$work/err"
check "second create exits 1" test $? = 1
check "second create says why" grep -q "^meshllm: mesh create: .*--force" "$work/err"
id2=$("$bin" mesh create --force --data-dir "$a")
check "create --force makes a new mesh" bash -c "[[ '$id2' =~ ^mesh- && '$id2' != '$id' ]]"

show=$("$bin" mesh show --data-dir "$a")
check "show exits 0" test $? = 0
check "show prints the mesh ID" grep -q "^mesh: *$id2\$" <<<"$show"
me=$("$bin" id --data-dir "$a" --url http://127.0.0.1:1)
check "show prints the peer ID" grep -q "^peer: *$me\$" <<<"$show"
check "show: owner device" grep -q "^owner device: *yes" <<<"$show"
check "show: issued by the owner key, never expires" \
    bash -c "grep -q '^issuer: *mesh owner key' <<<'$show' && grep -q '^expires: *never' <<<'$show'"
check "show: no revocations" grep -q "^revocations: *0" <<<"$show"

tok=$("$bin" invite --data-dir "$a" --expires 30m --addr /ip4/127.0.0.1/tcp/4001)
check "invite exits 0" test $? = 0
check "invite prints a token" bash -c "[[ '$tok' =~ ^meshllm-invite:[A-Za-z0-9_-]{100,}\$ ]]"
tok2=$(MESHLLM_HOME="$a" "$bin" invite --peer "$me" --addr /ip4/127.0.0.1/tcp/4001)
check "invite --peer, data dir from MESHLLM_HOME" bash -c "[[ '$tok2' =~ ^meshllm-invite: && '$tok2' != '$tok' ]]"
# no --addr and no running node ever recorded its addresses: a token nobody could redeem
"$bin" invite --data-dir "$a" >/dev/null 2>"$work/err"
check "invite with no address exits 1" test $? = 1
check "invite with no address says what to do" grep -q "^meshllm: invite: no address to put in the invite.*--addr" "$work/err"
"$bin" invite --data-dir "$b" >/dev/null 2>"$work/err"
check "invite by a non-member exits 1" test $? = 1
check "invite by a non-member says why" grep -q "^meshllm: invite: .*not a member" "$work/err"

other=$("$bin" id --data-dir "$b" --url http://127.0.0.1:1)
"$bin" revoke "$other" --data-dir "$b" 2>"$work/err"
check "revoke without the owner key exits 1" test $? = 1
check "revoke without the owner key says why" grep -q "^meshllm: revoke: .*owner key" "$work/err"
check "revoke with the owner key" "$bin" revoke "$other" --data-dir "$a"
check "show counts the revocation" bash -c "'$bin' mesh show --data-dir '$a' | grep -q '^revocations: *1'"

for args in "mesh" "mesh frobnicate" "mesh create --bogus" "mesh show --force" \
    "invite --expires 0h" "invite --expires 3x" "invite --expires 400d" "invite --peer nope" \
    "invite --addr /nope" "invite --bogus x" "revoke" "revoke not-a-peer" "revoke $me $me"; do
    # shellcheck disable=SC2086
    "$bin" $args --data-dir "$a" >/dev/null 2>&1
    check "misuse exits 2: $args" test $? = 2
done
for cmd in "mesh" "invite" "revoke"; do
    "$bin" $cmd --help >"$work/out" 2>/dev/null
    check "$cmd --help exits 0" test $? = 0
    check "$cmd --help on stdout" grep -q "usage: meshllm $cmd" "$work/out"
done
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
