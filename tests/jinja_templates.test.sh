#!/usr/bin/env bash
# jinja_templates.test.sh - meshllm's Jinja interpreter against Python's jinja2 (Debian's
# python3-jinja2, set up as transformers renders chat templates: tests/jinja_ref.py).
# Every template in tests/data/templates/ (15 chat templates of Llama 2, Llama 3.1 and 3.2
# with tools, Qwen 2.5 with tools, Mistral v3 with tools, Mistral Small 3, Phi-3, Phi-4,
# Gemma, Gemma 3, ChatML, SmolLM2, DeepSeek, DeepSeek R1 and Hermes 2 Pro, as the model
# cards publish them) is rendered with each of the 21 conversations of
# tests/data/chat_conversations.json (system, multi-turn, tool calls and results, unicode,
# generation prompt on and off, content parts) by both, through `meshllm template`; the outputs must
# be byte-identical, and where jinja2 raises (a template refusing a conversation, such as
# Gemma's "System role not supported") meshllm must fail too.
set -u
bin=${MESHLLM_BIN:-build/meshllm}
root=$(cd "$(dirname "$0")/.." && pwd)
data=$root/tests/data
pass=0
fails=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export TZ=UTC
now=1721990400 # 26 Jul 2024, for strftime_now

if ! python3 -c 'import jinja2' 2>/dev/null; then
    echo "python3-jinja2 is missing (scripts/setup.sh installs it)"
    echo "0 passed, 1 failed"
    exit 1
fi

# One context file per (template, conversation): the conversation plus the family's tokens.
python3 - "$data" "$tmp" <<'EOF'
import json, os, sys
data, tmp = sys.argv[1], sys.argv[2]
convs = json.load(open(os.path.join(data, "chat_conversations.json"), encoding="utf-8"))
tokens = json.load(open(os.path.join(data, "templates", "tokens.json"), encoding="utf-8"))
with open(os.path.join(tmp, "list"), "w") as lst:
    for fam in sorted(tokens):
        tmpl = os.path.join(data, "templates", fam + ".jinja")
        for c in convs:
            ctx = {k: v for k, v in c.items() if k != "name"}
            ctx.update(tokens[fam])
            base = os.path.join(tmp, "%s__%s" % (fam, c["name"]))
            json.dump(ctx, open(base + ".json", "w", encoding="utf-8"), ensure_ascii=False)
            lst.write("%s %s %s\n" % (tmpl, base + ".json", base + ".expected"))
EOF
python3 "$root/tests/jinja_ref.py" --batch "$tmp/list" --now $now || { echo "0 passed, 1 failed"; exit 1; }

# meshllm renders the same list (one process), each pair written beside jinja2's
sed 's/\.expected$/.got/' "$tmp/list" >"$tmp/list.got"
"$bin" template --batch "$tmp/list.got" --now $now 2>"$tmp/batch.log" || { cat "$tmp/batch.log"; echo "0 passed, 1 failed"; exit 1; }
n_rendered=0
while read -r tmpl ctx expected; do
    name=$(basename "$expected" .expected)
    got=${expected%.expected}.got
    if [ -f "$expected" ] && [ -f "$got" ]; then
        if cmp -s "$expected" "$got"; then
            pass=$((pass + 1))
            n_rendered=$((n_rendered + 1))
        else
            fails=$((fails + 1))
            echo "FAILED: $name differs from jinja2"
            diff <(od -c "$expected") <(od -c "$got") | head -10
        fi
    elif [ -f "$expected.err" ] && [ -f "$got.err" ]; then
        pass=$((pass + 1)) # both refuse (the template's raise_exception or a type error)
    elif [ -f "$expected.err" ]; then
        fails=$((fails + 1))
        echo "FAILED: $name: jinja2 fails ($(cat "$expected.err")), meshllm renders it"
    else
        fails=$((fails + 1))
        echo "FAILED: $name: jinja2 renders it, meshllm fails: $(head -c 300 "$got.err" 2>/dev/null)"
    fi
done <"$tmp/list"

# The single-file form users run gives the same bytes as the batch.
first=$(head -1 "$tmp/list")
set -- $first
if "$bin" template "$1" "$2" --now $now >"$tmp/one" && cmp -s "$tmp/one" "${3%.expected}.got"; then
    pass=$((pass + 1))
else
    fails=$((fails + 1))
    echo "FAILED: meshllm template FILE CONTEXT differs from --batch"
fi
# A model file: its own template, bos_token/eos_token from its vocabulary (Phi-3's).
models=${MESHLLM_TEST_MODELS:-$root/../shared/models}
phi=$models/llamacpp-vocab/ggml-vocab-phi-3.gguf
printf '{"messages": [{"role": "user", "content": "Hi"}], "add_generation_prompt": true}' >"$tmp/phi.json"
if [ -f "$phi" ]; then
    got=$("$bin" template "$phi" "$tmp/phi.json" | od -c | tr -s ' ' | tr -d '\n')
    want=$(printf '<s><|user|>\nHi<|end|>\n<|assistant|>\n' | od -c | tr -s ' ' | tr -d '\n')
    [ "$got" = "$want" ] && pass=$((pass + 1)) || { fails=$((fails + 1)); echo "FAILED: phi-3 GGUF template: $got"; }
fi
"$bin" template "$root/tests/data/templates/chatml.jinja" "$tmp/phi.json" --bad 2>/dev/null
[ $? -eq 2 ] && pass=$((pass + 1)) || { fails=$((fails + 1)); echo "FAILED: misuse must exit 2"; }
printf '{%% if %%}' >"$tmp/bad.jinja"
err=$("$bin" template "$tmp/bad.jinja" "$tmp/phi.json" 2>&1 >/dev/null)
[ $? -eq 1 ] && case $err in *bad.jinja:1:*) true ;; *) false ;; esac && pass=$((pass + 1)) ||
    { fails=$((fails + 1)); echo "FAILED: a broken template must fail with FILE:LINE:COL: $err"; }

# Most pairs must really render (not only fail alike), or the comparison proves little.
total=$(wc -l <"$tmp/list")
if [ "$n_rendered" -ge $((total * 2 / 3)) ]; then
    pass=$((pass + 1))
else
    fails=$((fails + 1))
    echo "FAILED: only $n_rendered of $total pairs rendered"
fi
echo "rendered byte-identical: $n_rendered of $total (the rest fail in both)"
echo "$pass passed, $fails failed"
[ "$fails" -eq 0 ]
