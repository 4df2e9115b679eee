#!/usr/bin/env bash
# cli_tokenize.test.sh - `meshllm tokenize` / `detokenize` as a user runs them: BOS per the
# model vs --raw, special-token parsing, exact byte round trips (UTF-8, invalid bytes, NUL)
# on SentencePiece and byte-level BPE vocabularies, WordPiece ids, exit codes (0 ok,
# 1 failure, 2 misuse) and --help.
set -u
bin=${MESHLLM_BIN:-build/meshllm}
models=${MESHLLM_TEST_MODELS:-../shared/models}
v=$models/llamacpp-vocab
fails=0
pass=0
check() { # name, condition-result
    if [ "$2" = 0 ]; then pass=$((pass + 1)); else fails=$((fails + 1)); echo "FAILED: $1"; fi
}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

got=$(printf 'Once upon a time' | "$bin" tokenize "$models/stories260K.gguf")
[ "$got" = "1 403 407 261 378" ]; check "tokenize adds BOS as run does" $?
got=$(printf 'Once upon a time' | "$bin" tokenize "$models/stories260K.gguf" --raw)
[ "$got" = "403 407 261 378" ]; check "tokenize --raw: no BOS" $?
got=$(printf '' | "$bin" tokenize --raw "$models/stories260K.gguf")
[ "$got" = "" ]; check "empty input, empty line" $?

got=$(printf 'a<|endoftext|>b' | "$bin" tokenize "$v/ggml-vocab-gpt-2.gguf")
[ "$got" = "64 50256 65" ]; check "special token text parsed without --raw" $?
got=$(printf 'a<|endoftext|>b' | "$bin" tokenize --raw "$v/ggml-vocab-gpt-2.gguf")
case " $got " in *" 50256 "*) false ;; *) true ;; esac; check "--raw does not parse it" $?

printf 'Hello, w\xc3\xb6rld! \xe4\xb8\xad\xe6\x96\x87 \xf0\x9f\xa6\x99\n\n\t  x  \xff\xfe\x00 end ' >"$tmp/in"
# (starcoder, falcon, mpt have no token for the bytes 0xFE/0xFF and drop them, as llama.cpp)
for voc in llama-spm phi-3 gpt-2; do
    "$bin" tokenize --raw "$v/ggml-vocab-$voc.gguf" <"$tmp/in" >"$tmp/ids"
    check "$voc tokenize exit 0" $?
    "$bin" detokenize "$v/ggml-vocab-$voc.gguf" <"$tmp/ids" >"$tmp/out"
    check "$voc detokenize exit 0" $?
    cmp -s "$tmp/in" "$tmp/out"; check "$voc round trip is byte exact" $?
done

got=$(printf '1 15043' | "$bin" detokenize "$v/ggml-vocab-llama-spm.gguf")
[ "$got" = "Hello" ]; check "detokenize drops BOS and the dummy-prefix space" $?
got=$(printf '1 15043' | "$bin" detokenize --special --keep-space "$v/ggml-vocab-llama-spm.gguf")
[ "$got" = "<s> Hello" ]; check "--special --keep-space" $?
got=$(printf 'Hello world' | "$bin" tokenize "$v/ggml-vocab-bert-bge.gguf")
[ "$got" = "101 7592 2088 102" ]; check "WordPiece: [CLS] hello world [SEP]" $?

printf '1 x' | "$bin" detokenize "$models/stories260K.gguf" >/dev/null 2>"$tmp/err"
[ $? = 1 ] && grep -q "not a token id" "$tmp/err"; check "bad id: exit 1 with a message" $?
printf '512' | "$bin" detokenize "$models/stories260K.gguf" >/dev/null 2>&1
[ $? = 1 ]; check "id out of range: exit 1" $?
"$bin" tokenize "$tmp/missing.gguf" </dev/null >/dev/null 2>&1
[ $? = 1 ]; check "missing model: exit 1" $?
"$bin" tokenize >/dev/null 2>&1
[ $? = 2 ]; check "no model: exit 2" $?
"$bin" detokenize --bogus x >/dev/null 2>&1
[ $? = 2 ]; check "unknown option: exit 2" $?
"$bin" tokenize --help | grep -q "usage: meshllm tokenize"; check "tokenize --help" $?
"$bin" detokenize --help | grep -q "usage: meshllm detokenize"; check "detokenize --help" $?

echo "$pass passed, $fails failed"
[ "$fails" = 0 ]
