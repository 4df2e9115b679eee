#!/usr/bin/env bash
# api_grammar.test.sh - structured output over HTTP on `meshllm serve` (stories260K): OpenAI
# response_format json_schema / json_object, llama.cpp's grammar and json_schema fields on chat
# and completions, Ollama format "json" and a schema on /api/chat and /api/generate, a streamed
# constrained reply, 400s that name the problem; then the openai SDK's zodResponseFormat +
# beta.chat.completions.parse and the ollama client (tests/e2e/grammar.test.mjs).
set -uo pipefail
source "$(dirname "$0")/e2e/server.sh"
fails=0
pass=0
check() { # name, condition-result
    if [ "$2" = 0 ]; then pass=$((pass + 1)); else fails=$((fails + 1)); echo "FAILED: $1"; fi
}
e2e_start URL --model "$MESHLLM_TEST_MODELS/stories260K.gguf" --slots 2 --threads 1 --ollama-port 0 || exit 1
OLL=http://127.0.0.1:$(grep -oE 'Ollama API at http://127\.0\.0\.1:[0-9]+' "$URL_LOG" | grep -oE '[0-9]+$')
post() { # url body -> body in $E2E_TMP/body, status on stdout
    curl -s -o "$E2E_TMP/body" -w '%{http_code}' -H 'Content-Type: application/json' "$1" -d "$2"
}
field() { # python expression over the response d -> stdout
    python3 -c "import json,sys; d=json.load(open('$E2E_TMP/body')); print($1)"
}
valid() { # schema-json text -> validates the text in $E2E_TMP/text
    python3 -c "
import json,sys,jsonschema
t=open('$E2E_TMP/text').read()
jsonschema.Draft202012Validator(json.loads(sys.argv[1])).validate(json.loads(t))" "$1"
}
S='{"type":"object","properties":{"name":{"type":"string","maxLength":12},"mood":{"enum":["happy","sad"]},"n":{"type":"integer"},"tags":{"type":"array","items":{"type":"string","maxLength":5},"maxItems":3}},"required":["name","mood","n"],"additionalProperties":false}'
msgs='"messages":[{"role":"user","content":"Tell me about Lily."}]'

for seed in 1 2 3; do
    st=$(post "$URL/v1/chat/completions" "{\"model\":\"stories260K\",$msgs,\"seed\":$seed,\"max_tokens\":500,\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"p\",\"strict\":true,\"schema\":$S}}}")
    [ "$st" = 200 ] && field "d['choices'][0]['message']['content']" >"$E2E_TMP/text" && valid "$S"
    rc=$?; check "chat response_format json_schema, seed $seed: $(head -c 200 "$E2E_TMP/text")" $rc
done
# any JSON object: strings are unbounded, so a story model may still be inside one at
# max_tokens; a finished reply must be an object, a cut one must have started as one
obj_ok() { # finish-reason
    if [ "$1" = stop ]; then valid '{"type":"object"}'; else grep -q '^{' "$E2E_TMP/text"; fi
}
st=$(post "$URL/v1/chat/completions" "{\"model\":\"stories260K\",$msgs,\"seed\":4,\"max_tokens\":500,\"response_format\":{\"type\":\"json_object\"}}")
[ "$st" = 200 ] && field "d['choices'][0]['message']['content']" >"$E2E_TMP/text" && obj_ok "$(field "d['choices'][0]['finish_reason']")"
rc=$?; check "chat response_format json_object: $(head -c 200 "$E2E_TMP/text")" $rc
st=$(post "$URL/v1/chat/completions" "{\"model\":\"stories260K\",$msgs,\"seed\":5,\"grammar\":\"root ::= (\\\"yes\\\" | \\\"no\\\") \\\".\\\"\"}")
[ "$st" = 200 ] && field "d['choices'][0]['message']['content']" | grep -qxE '(yes|no)\.'
check "chat grammar (GBNF)" $?
st=$(post "$URL/v1/completions" "{\"model\":\"stories260K\",\"prompt\":\"Once upon a time\",\"seed\":6,\"max_tokens\":400,\"json_schema\":$S}")
[ "$st" = 200 ] && field "d['choices'][0]['text']" >"$E2E_TMP/text" && valid "$S"
rc=$?; check "completions json_schema (llama.cpp field): $(head -c 200 "$E2E_TMP/text")" $rc
st=$(post "$URL/v1/completions" "{\"model\":\"stories260K\",\"prompt\":\"Once\",\"seed\":7,\"max_tokens\":40,\"grammar\":\"root ::= [0-9]{3} \\\"-\\\" [a-z]{2}\"}")
[ "$st" = 200 ] && field "d['choices'][0]['text']" | grep -qxE '[0-9]{3}-[a-z]{2}'
check "completions grammar" $?
# streamed: the SSE deltas join into valid JSON
curl -sN -H 'Content-Type: application/json' "$URL/v1/chat/completions" \
    -d "{\"model\":\"stories260K\",$msgs,\"seed\":8,\"stream\":true,\"max_tokens\":500,\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"p\",\"schema\":$S}}}" |
    python3 -c "
import json,sys
t=''
for l in sys.stdin:
    if l.startswith('data: ') and l.strip() != 'data: [DONE]':
        c=json.loads(l[6:])['choices']
        if c: t += c[0]['delta'].get('content') or ''
open('$E2E_TMP/text','w').write(t)" && valid "$S"
rc=$?; check "streamed json_schema reply parses: $(head -c 200 "$E2E_TMP/text")" $rc

# Ollama
st=$(post "$OLL/api/chat" "{\"model\":\"stories260K\",$msgs,\"stream\":false,\"format\":$S,\"options\":{\"seed\":9,\"num_predict\":500}}")
[ "$st" = 200 ] && field "d['message']['content']" >"$E2E_TMP/text" && valid "$S"
rc=$?; check "ollama /api/chat format schema: $(head -c 200 "$E2E_TMP/text")" $rc
st=$(post "$OLL/api/generate" "{\"model\":\"stories260K\",\"prompt\":\"Once\",\"stream\":false,\"format\":\"json\",\"options\":{\"seed\":10,\"num_predict\":500}}")
[ "$st" = 200 ] && field "d['response']" >"$E2E_TMP/text" && obj_ok "$(field "d['done_reason']")"
rc=$?; check "ollama /api/generate format json: $(head -c 200 "$E2E_TMP/text")" $rc

# refusals: 400 naming the problem
st=$(post "$URL/v1/chat/completions" "{\"model\":\"stories260K\",$msgs,\"grammar\":\"root ::= value\"}")
[ "$st" = 400 ] && field "d['error']['message']" | grep -q "undefined rule 'value'" && field "d['error']['param']" | grep -qx grammar
check "bad grammar: 400, message and param" $?
st=$(post "$URL/v1/chat/completions" "{\"model\":\"stories260K\",$msgs,\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"x\",\"schema\":{\"type\":\"array\",\"minItems\":4,\"maxItems\":2}}}}")
[ "$st" = 400 ] && field "d['error']['message']" | grep -q "minItems" && field "d['error']['param']" | grep -q "response_format.json_schema.schema"
check "bad schema: 400 naming minItems" $?
st=$(post "$URL/v1/chat/completions" "{\"model\":\"stories260K\",$msgs,\"response_format\":{\"type\":\"json_schema\"}}")
[ "$st" = 400 ] && field "d['error']['param']" | grep -q "response_format.json_schema"
check "json_schema without its object: 400" $?
st=$(post "$URL/v1/chat/completions" "{\"model\":\"stories260K\",$msgs,\"json_schema\":{\"type\":\"integer\"},\"grammar\":\"root ::= \\\"1\\\"\"}")
[ "$st" = 400 ] && field "d['error']['message']" | grep -q "only one"
check "two constraints at once: 400" $?
st=$(post "$OLL/api/chat" "{\"model\":\"stories260K\",$msgs,\"stream\":false,\"format\":\"yaml\"}")
[ "$st" = 400 ] && field "d['error']" | grep -q "format"
check "ollama format yaml: 400 {error: message}" $?

# the official clients
if e2e_npm; then
    MESHLLM_URL=$URL MESHLLM_OLLAMA_URL=$OLL node --test --test-concurrency=1 "$E2E_DIR/grammar.test.mjs" >"$E2E_TMP/node.log" 2>&1
    rc=$?
    [ $rc = 0 ] || tail -40 "$E2E_TMP/node.log"
    check "openai zodResponseFormat + parse, ollama format (node)" $rc
    MESHLLM_URL=$URL MESHLLM_OLLAMA_URL=$OLL node --test --test-concurrency=1 "$E2E_DIR/tools.test.mjs" >"$E2E_TMP/tools.log" 2>&1
    rc=$?
    [ $rc = 0 ] || tail -40 "$E2E_TMP/tools.log"
    check "tool calls: openai (forced, required, streamed, round trip), ollama (node)" $rc
else
    check "npm packages install" 1
fi
echo "$pass passed, $fails failed"
[ $fails = 0 ]
