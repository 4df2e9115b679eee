#!/usr/bin/env bash
# cli_run.test.sh - `meshllm run` and `chat` as a user runs them: exact greedy text against
# llama.cpp's reference, stdout holds only generated text, exit codes (0 ok, 1 failure,
# 2 misuse), --help everywhere, seeds reproduce, --stop cuts, chat streams replies.
set -u
bin=${MESHLLM_BIN:-build/meshllm}
models=${MESHLLM_TEST_MODELS:-../shared/models}
m=$models/stories260K.gguf
ref=$models/reference/stories260K.llamacpp-greedy.json
fails=0
pass=0
check() { # name, condition-result
    if [ "$2" = 0 ]; then pass=$((pass + 1)); else fails=$((fails + 1)); echo "FAILED: $1"; fi
}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# greedy text equals llama.cpp's (which includes the prompt; we print only the continuation)
want=$(python3 -c "
import json,sys
d=json.load(open('$ref'))
r=d['variants'][0]['runs'][1]
sys.stdout.write(r['text'][len(r['prompt']):])")
"$bin" run "$m" "Once upon a time" -n 60 --temp 0 >"$tmp/out" 2>"$tmp/err"
check "run exit 0" $?
got=$(cat "$tmp/out")
[ "$got" = "$want" ]; check "greedy text equals llama.cpp's" $?
[ ! -s "$tmp/err" ] || grep -qv "padding_token_id" "$tmp/err"; true
# ids of the empty-prompt greedy run equal llama.cpp's 200
want_ids=$(python3 -c "
import json
d=json.load(open('$ref'))
print(' '.join(map(str,d['variants'][0]['runs'][0]['generated_ids'])))")
got_ids=$("$bin" run "$m" -n 200 --temp 0 --ids 2>/dev/null)
[ "$got_ids" = "$want_ids" ]; check "empty prompt: 200 greedy ids equal llama.cpp's" $?
# same seed -> same text; other seed -> other text
a=$("$bin" run "$m" "Lily" -n 40 --seed 7 2>/dev/null)
b=$("$bin" run "$m" "Lily" -n 40 --seed 7 2>/dev/null)
c=$("$bin" run "$m" "Lily" -n 40 --seed 8 2>/dev/null)
[ -n "$a" ] && [ "$a" = "$b" ]; check "seed reproduces" $?
[ "$a" != "$c" ]; check "other seed differs" $?
# --stop cuts before the stop string
s=$("$bin" run "$m" "Once upon a time" -n 60 --temp 0 --stop "Lily" 2>/dev/null)
[ "$s" = ", there was a little girl named " ]; check "--stop" $?
# prompt from a file equals the argument
printf 'Once upon a time' >"$tmp/p.txt"
f=$("$bin" run "$m" -f "$tmp/p.txt" -n 60 --temp 0 2>/dev/null)
[ "$f" = "$want" ]; check "-f prompt file" $?
# an unreadable prompt file is an error, not an empty prompt
"$bin" run "$m" -f "$tmp" -n 5 --temp 0 >"$tmp/out" 2>"$tmp/err"; rc=$?
[ $rc = 1 ] && [ ! -s "$tmp/out" ] && grep -q "^meshllm: run: .*: Is a directory" "$tmp/err"
check "-f DIR: exit 1 with the reason" $?
"$bin" run "$m" -f "$tmp/none.txt" -n 5 >/dev/null 2>"$tmp/err"; rc=$?
[ $rc = 1 ] && grep -q "none.txt: No such file" "$tmp/err"; check "-f missing file: exit 1 with the reason" $?
# help and misuse
"$bin" --help | grep -q "run" ; check "meshllm --help" $?
for cmd in run chat bench; do
    "$bin" $cmd --help >"$tmp/h" 2>&1; rc=$?
    [ $rc = 0 ] && grep -q "usage: meshllm $cmd" "$tmp/h"; check "$cmd --help" $?
done
"$bin" run >/dev/null 2>&1; [ $? = 2 ]; check "run without a model exits 2" $?
# llama.cpp's -m spelling
a=$("$bin" run -m "$m" "Once upon a time" -n 60 --temp 0 2>/dev/null)
[ "$a" = "$want" ]; check "run -m MODEL PROMPT" $?
a=$("$bin" run "Once upon a time" -m "$m" -n 60 --temp 0 2>/dev/null)
[ "$a" = "$want" ]; check "run PROMPT -m MODEL" $?
"$bin" run -m "$m" -m "$m" x >/dev/null 2>&1; [ $? = 2 ]; check "run with two models exits 2" $?
# bench: the llama-bench-like table, and with --profile the time per step, whose shares
# add up to the whole
"$bin" bench "$m" -p 16 -n 8 -t 2 -r 2 -b 1,2 --profile >"$tmp/bench" 2>"$tmp/err"; rc=$?
[ $rc = 0 ] && grep -q "| pp16 |" "$tmp/bench" && grep -q "| tg8 |" "$tmp/bench" && grep -q "| tg8x2 |" "$tmp/bench" &&
    grep -Eq '^cpu .*: .*; kernels (scalar|avx2|avx512|neon) ' "$tmp/bench"
check "bench table" $?
# every step's time adds up to the runs' measured time per token (the last column)
awk -F'|' '/^\| (pp16|tg8|tg8x2) \| [0-9]/ { n++; got = $(NF - 2) + 0; want = $(NF - 1) + 0
    if (!(want > 0) || got < 0.9 * want || got > 1.03 * want) bad = 1 }
    END { exit !(n == 3 && !bad) }' "$tmp/bench"
check "bench --profile: three rows whose step times add up to the measured time per token" $?
"$bin" frobnicate >/dev/null 2>&1; [ $? = 2 ]; check "unknown command exits 2" $?
"$bin" run "$m" x --top-k banana >/dev/null 2>&1; [ $? = 2 ]; check "bad number exits 2" $?
"$bin" run /nonexistent/model.gguf "x" >"$tmp/out" 2>"$tmp/err"; rc=$?
[ $rc = 1 ] && [ ! -s "$tmp/out" ] && grep -q "^meshllm: /nonexistent/model.gguf" "$tmp/err"
check "missing model: exit 1, message, empty stdout" $?
head -c 1000 "$m" >"$tmp/trunc.gguf"
"$bin" run "$tmp/trunc.gguf" "x" >/dev/null 2>"$tmp/err"; rc=$?
[ $rc = 1 ] && grep -q "trunc.gguf" "$tmp/err"; check "truncated model: exit 1 with a message" $?
# a prompt longer than the context is refused clearly
long=$(printf 'Lily %.0s' $(seq 1 300))
"$bin" run "$m" "$long" --ctx 64 >/dev/null 2>"$tmp/err"; rc=$?
[ $rc = 1 ] && grep -q "does not fit the context" "$tmp/err"; check "prompt too long" $?
"$bin" run "$m" "Once" -n 1 -v 2>"$tmp/err" >/dev/null
grep -Eq '^meshllm: model stories260K ready in [0-9.]+ s' "$tmp/err"; check "run -v: the ready line" $?
"$bin" run "$m" "Once" -n 1 2>"$tmp/err" >/dev/null
! grep -q 'ready in' "$tmp/err"; check "run without -v off a terminal: no ready line" $?
# chat: two turns from a pipe, replies streamed to stdout, cache reused on turn 2
printf 'Hello\nTell me a story\n' | "$bin" chat "$m" -n 20 --temp 0 -v >"$tmp/chat" 2>"$tmp/err"
rc=$?
[ $rc = 0 ] && [ "$(grep -c . "$tmp/chat")" -ge 2 ] && grep -q "reused" "$tmp/err"
check "chat two turns" $?

# chat: a message too long for the context is refused without forgetting the history
long=$(printf 'x%.0s' $(seq 1 400))
printf 'Hello\n%s\nTell me a story\n' "$long" |
    "$bin" chat "$m" -n 8 --temp 0 --ctx 128 -v >"$tmp/chat" 2>"$tmp/err"
rc=$?
[ $rc = 0 ] && grep -q "does not fit the context" "$tmp/err" && ! grep -q "forgetting" "$tmp/err" &&
    [ "$(grep "reused" "$tmp/err" | tail -1 | grep -oE '\(([0-9]+) reused' | grep -oE '[0-9]+')" -gt 40 ]
check "chat: a message that cannot fit keeps the history" $?

# chat renders the model's template as its Jinja does: a Qwen2-style template inserts its
# default system prompt when the user gives none (same prompt as giving it explicitly)
python3 - "$m" "$tmp/qwen-tmpl.gguf" <<'PY'
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
for _ in range(n_t):
    n = rd('Q'); pos += n
    nd = rd('I'); pos += 8 * nd + 12
base = (pos + 31) // 32 * 32
tmpl = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
        "{{ '<|im_start|>system\\nYou are a helpful assistant<|im_end|>\\n' }}{% endif %}"
        "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
        "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}").encode()
key = b'tokenizer.chat_template'
kv = struct.pack('<Q', len(key)) + key + struct.pack('<IQ', 8, len(tmpl)) + tmpl
out = bytearray(b[:16] + struct.pack('<Q', n_kv + 1) + b[24:kv_end] + kv + b[kv_end:pos])
out += b'\0' * ((-len(out)) % 32)
out += b[base:]
open(sys.argv[2], 'wb').write(out)
PY
new_tokens() { grep -oE '^meshllm: [0-9]+ new prompt tokens' | grep -oE '[0-9]+'; }
a=$(printf 'Hello\n' | "$bin" chat "$tmp/qwen-tmpl.gguf" -n 2 --temp 0 -v 2>&1 >/dev/null | new_tokens)
b=$(printf 'Hello\n' | "$bin" chat "$m" --chat-template chatml --system "You are a helpful assistant" \
    -n 2 --temp 0 -v 2>&1 >/dev/null | new_tokens)
c=$(printf 'Hello\n' | "$bin" chat "$m" --chat-template chatml -n 2 --temp 0 -v 2>&1 >/dev/null | new_tokens)
[ -n "$a" ] && [ "$a" = "$b" ] && [ "$a" -gt "$c" ]
check "chat: the template's default system prompt is rendered" $?

# chat: each turn draws new random numbers (the same question twice gets its own reply),
# and a seed replays the whole conversation
chat_twice() { printf 'Hello\n/clear\nHello\n' | "$bin" chat "$m" -n 12 --temp 1.5 --seed 7 2>/dev/null; }
chat_twice >"$tmp/c1"
chat_twice >"$tmp/c2"
[ "$(grep -c . "$tmp/c1")" = 2 ] && [ "$(sed -n 1p "$tmp/c1")" != "$(sed -n 2p "$tmp/c1")" ] &&
    cmp -s "$tmp/c1" "$tmp/c2"
check "chat: turns sample afresh, a seed replays" $?

# speculative decoding: n-gram and draft-model output equals plain decoding (greedy and a
# seed), -v reports the acceptance, misuse is refused
plain=$("$bin" run "$m" "Once upon a time" -n 200 --temp 0 --ids 2>/dev/null)
for spec in "--spec ngram" "--draft $m" "-md $m --draft-max 4 --draft-min 2"; do
    got=$("$bin" run "$m" "Once upon a time" -n 200 --temp 0 --ids $spec 2>/dev/null)
    [ -n "$plain" ] && [ "$got" = "$plain" ]; check "run $spec: greedy ids equal plain decoding" $?
done
a=$("$bin" run "$m" "Lily" -n 80 --seed 7 2>/dev/null)
b=$("$bin" run "$m" "Lily" -n 80 --seed 7 --spec ngram 2>/dev/null)
[ -n "$a" ] && [ "$a" = "$b" ]; check "run --spec ngram: a seed gives plain decoding's text" $?
s=$("$bin" run "$m" "Once upon a time" -n 60 --temp 0 --stop "Lily" --draft "$m" 2>/dev/null)
[ "$s" = ", there was a little girl named " ]; check "run --draft: --stop cuts at the same place" $?
"$bin" run "$m" "Once upon a time" -n 100 --temp 0 --spec ngram -v >/dev/null 2>"$tmp/err"
grep -qE "^meshllm: speculative: [0-9]+ drafted, [1-9][0-9]* accepted" "$tmp/err"
check "run -v reports drafted and accepted tokens" $?
"$bin" run "$m" x --spec draft >/dev/null 2>"$tmp/err"; rc=$?
[ $rc = 2 ] && grep -q "needs a draft model" "$tmp/err"; check "--spec draft without --draft: exit 2" $?
"$bin" run "$m" x --spec fast >/dev/null 2>&1; [ $? = 2 ]; check "--spec fast: exit 2" $?
"$bin" run "$m" x --draft /nonexistent.gguf >/dev/null 2>"$tmp/err"; rc=$?
[ $rc = 1 ] && grep -q "draft model /nonexistent.gguf" "$tmp/err"; check "--draft missing file: exit 1" $?

echo "$pass passed, $fails failed"
[ $fails = 0 ]
