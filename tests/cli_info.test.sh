#!/usr/bin/env bash
# cli_info.test.sh - `meshllm info` as a user runs it: the facts of a real file, the tensor
# table, valid --json, the chat template family that `chat` would use, exit codes
# (0 ok, 1 unreadable file with a 'meshllm: ' message, 2 misuse).
set -u
bin=${MESHLLM_BIN:-build/meshllm}
models=${MESHLLM_TEST_MODELS:-../shared/models}
m=$models/stories260K.gguf
fails=0
pass=0
check() { # name, condition-result
    if [ "$2" = 0 ]; then pass=$((pass + 1)); else fails=$((fails + 1)); echo "FAILED: $1"; fi
}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

"$bin" info "$m" >"$tmp/out" 2>"$tmp/err"
check "info exit 0" $?
grep -q "^architecture: *llama$" "$tmp/out" && grep -q "^layers: *5$" "$tmp/out" &&
    grep -q "^kv heads: *4$" "$tmp/out"
check "info: architecture and hyper-parameters" $?
[ "$(grep -cE '^[0-9]+ +(token_embd|output|blk\.)' "$tmp/out")" = 48 ] &&
    grep -qE '^0 +token_embd.weight +F32 +64 x 512 +131072$' "$tmp/out"
check "info: tensor table (48 rows: name, type, shape, bytes)" $?
"$bin" info "$m" --json | python3 -c "
import json, sys
d = json.load(sys.stdin)
assert len(d['tensors']) == 48, len(d['tensors'])" 2>"$tmp/err"
check "info --json is valid JSON with every tensor" $?
# the template family is the one chat renders (engine/chat.c detection), not a guess
"$bin" info "$models/llamacpp-vocab/ggml-vocab-phi-3.gguf" --no-tensors >"$tmp/out" 2>&1
grep -q "^chat template: *phi3$" "$tmp/out"
check "info: chat template family as chat detects it" $?
"$bin" info --help >"$tmp/out"; rc=$?
[ $rc = 0 ] && grep -q "usage: meshllm info" "$tmp/out"; check "info --help" $?
"$bin" info >/dev/null 2>&1; [ $? = 2 ]; check "info without a model exits 2" $?
head -c 5000 "$m" >"$tmp/cut.gguf"
"$bin" info "$tmp/cut.gguf" >/dev/null 2>"$tmp/err"; rc=$?
[ $rc = 1 ] && grep -q "^meshllm: .*cut.gguf" "$tmp/err"; check "truncated file: exit 1, message" $?

echo "$pass passed, $fails failed"
[ "$fails" = 0 ]
