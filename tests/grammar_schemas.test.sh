#!/usr/bin/env bash
# grammar_schemas.test.sh - structured output end to end: 50 generated JSON Schemas
# (tests/util/gen_schemas.py), each compiled by `meshllm run --json-schema-file` and sampled at
# temperature 1 from random-weight models (a 32k SentencePiece vocabulary and GPT-2's 50k
# byte-level BPE one), so tokens are drawn nearly uniformly and only the grammar keeps the
# output in shape; every output must validate with python3-jsonschema. Also: GBNF files,
# -j spelling, and misuse (bad schema, bad grammar, both given) exiting 2 with the reason.
set -u
bin=${MESHLLM_BIN:-build/meshllm}
models=${MESHLLM_TEST_MODELS:-../shared/models}
mkmodel=$(dirname "$bin")/bench/mkmodel
fails=0
pass=0
check() { # name, condition-result
    if [ "$2" = 0 ]; then pass=$((pass + 1)); else fails=$((fails + 1)); echo "FAILED: $1"; fi
}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

for v in llama-spm gpt-2; do
    "$mkmodel" --arch llama --dim 64 --layers 2 --heads 4 --kv-heads 2 --ff 128 --seed 7 \
        --vocab "$models/llamacpp-vocab/ggml-vocab-$v.gguf" -o "$tmp/$v.gguf" --type F32 2>/dev/null
    check "random model with the $v vocabulary" $?
done
python3 tests/util/gen_schemas.py "$tmp/schemas" 50 14
check "50 schemas generated" $?

n_valid=0
for f in "$tmp"/schemas/schema*.json; do
    i=$(basename "$f" .json | tr -dc 0-9)
    i=$((10#$i))
    v=llama-spm
    [ $((i % 2)) = 1 ] && v=gpt-2
    out=$tmp/out$i.txt
    if ! "$bin" run "$tmp/$v.gguf" "Answer in JSON:" --temp 1 --seed $((100 + i)) -n 1800 --ctx 2048 \
        --json-schema-file "$f" >"$out" 2>"$tmp/err$i"; then
        echo "run failed on $f ($v): $(cat "$tmp/err$i")"
        continue
    fi
    python3 tests/util/validate_json.py "$f" "$out" && n_valid=$((n_valid + 1))
done
echo "valid outputs: $n_valid of 50"
[ "$n_valid" = 50 ]; check "every sampled output validates against its schema" $?

# GBNF from a file and inline; -j
g=tests/data/grammars/chess.gbnf
"$bin" run "$tmp/llama-spm.gguf" x --temp 1 --seed 3 -n 200 --grammar-file "$g" >"$tmp/chess" 2>&1
check "--grammar-file runs" $?
grep -qE '^1\. ' "$tmp/chess"; check "chess output starts with a move number" $?
"$bin" run "$tmp/gpt-2.gguf" x --temp 1 --seed 4 -n 50 --grammar 'root ::= ("yes" | "no") "!"' >"$tmp/yn"
check "--grammar runs" $?
grep -qxE "(yes|no)!" "$tmp/yn"; rc=$?; check "yes/no grammar output is exact: $(cat "$tmp/yn")" $rc
"$bin" run "$tmp/llama-spm.gguf" x --temp 1 --seed 5 -n 300 -j '{"type":"array","items":{"type":"integer"},"minItems":2,"maxItems":4}' >"$tmp/arr"
python3 -c "import json,sys; a=json.load(open('$tmp/arr')); sys.exit(not (2 <= len(a) <= 4 and all(type(x) is int for x in a)))"
rc=$?; check "-j array bounds: $(cat "$tmp/arr")" $rc

# misuse: exit 2 with the reason
"$bin" run "$tmp/gpt-2.gguf" x --grammar 'root ::= item' >/dev/null 2>"$tmp/e1"; rc=$?
[ $rc = 2 ] && grep -q "undefined rule 'item'" "$tmp/e1"; check "undefined rule: exit 2 and named" $?
"$bin" run "$tmp/gpt-2.gguf" x --grammar 'root ::= root "a" | "b"' >/dev/null 2>"$tmp/e2"; rc=$?
[ $rc = 2 ] && grep -q "left-recursive" "$tmp/e2"; check "left recursion: exit 2 and named" $?
"$bin" run "$tmp/gpt-2.gguf" x -j '{"type":"string","pattern":"a+"}' >/dev/null 2>"$tmp/e3"; rc=$?
[ $rc = 2 ] && grep -q "pattern" "$tmp/e3"; check "unsupported schema keyword: exit 2 and named" $?
"$bin" run "$tmp/gpt-2.gguf" x -j '{"type":' >/dev/null 2>"$tmp/e4"; rc=$?
[ $rc = 2 ] && grep -q "not valid JSON" "$tmp/e4"; check "schema not JSON: exit 2" $?
"$bin" run "$tmp/gpt-2.gguf" x -j '{}' --grammar 'root ::= "a"' >/dev/null 2>"$tmp/e5"; rc=$?
[ $rc = 2 ] && grep -q "not both" "$tmp/e5"; check "grammar and schema together: exit 2" $?
"$bin" run "$tmp/gpt-2.gguf" x --grammar-file /nonexistent.gbnf >/dev/null 2>"$tmp/e6"; rc=$?
[ $rc = 1 ] && grep -q "/nonexistent.gbnf" "$tmp/e6"; check "missing grammar file: exit 1 and named" $?
"$bin" run --help | grep -q -- '--json-schema'; check "run --help lists --json-schema" $?

echo "$pass passed, $fails failed"
[ $fails = 0 ]
