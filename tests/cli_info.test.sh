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

# general.alignment below GGUF's minimum of 8 (tensors packed with alignment 1, so F32
# data is misaligned) is refused with a message, never read
python3 - "$m" "$tmp/align1.gguf" <<'PY'
import struct, sys
b = open(sys.argv[1], 'rb').read()
pos = 24
def rd(f):
    global pos
    v = struct.unpack_from('<' + f, b, pos)[0]
    pos += struct.calcsize('<' + f)
    return v
def skip(t):
    global pos
    if t == 8:
        n = rd('Q'); pos += n
    elif t == 9:
        et, n = rd('I'), rd('Q')
        for _ in range(n): skip(et)
    else: pos += {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}[t]
n_t, n_kv = struct.unpack_from('<QQ', b, 8)
for _ in range(n_kv):
    n = rd('Q'); pos += n
    skip(rd('I'))
kv_end = pos
tensors = []  # (info bytes without the offset, old offset, bytes)
for _ in range(n_t):
    st = pos
    n = rd('Q'); pos += n
    nd = rd('I'); ne = [rd('q') for _ in range(nd)]
    assert rd('I') == 0  # stories260K is all F32
    n = 4
    for x in ne: n *= x
    tensors.append((b[st:pos], rd('Q'), n))
base = (pos + 31) // 32 * 32  # the file's data section (default alignment 32)
key = b'general.alignment'
out = bytearray(b[:16] + struct.pack('<Q', n_kv + 1) + b[24:kv_end])
out += struct.pack('<Q', len(key)) + key + struct.pack('<II', 4, 1)
cur = 0
for info, off, n in tensors:  # packed back to back right after the infos
    out += info + struct.pack('<Q', cur)
    cur += n
for info, off, n in tensors:
    out += b[base + off: base + off + n]
open(sys.argv[2], 'wb').write(out)
PY
"$bin" run "$tmp/align1.gguf" "x" -n 1 >/dev/null 2>"$tmp/err"; rc=$?
[ $rc = 1 ] && grep -q "general.alignment 1 is not a power of two >= 8" "$tmp/err"
check "alignment 1: refused with a message" $?

echo "$pass passed, $fails failed"
[ "$fails" = 0 ]
