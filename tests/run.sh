#!/usr/bin/env bash
# tests/run.sh BUILD_DIR - runs every test of the suite against one build and prints
# "N passed, N failed" last. Each cmocka program counts its tests; each fuzz replay and
# each tests/*.test.sh script counts its 'N passed, N failed' line (or as one test). Set MESHLLM_TEST_FILTER=regex to run a
# subset. Exit status 0 only if nothing failed.
set -u
build=${1:-build}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export MESHLLM_TEST_MODELS=${MESHLLM_TEST_MODELS:-$root/../shared/models}
export MESHLLM_BUILD=$build
export MESHLLM_BIN=$root/$build/meshllm
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
filter=${MESHLLM_TEST_FILTER:-.}
logdir=$root/$build/test-logs
mkdir -p "$logdir"
passed=0
failed=0
failed_names=()

run_one() { # name, command...
    local name=$1
    shift
    local log=$logdir/$name.log
    local t0=$(date +%s)
    timeout 600 "$@" >"$log" 2>&1
    local rc=$?
    local dt=$(($(date +%s) - t0))
    local p f
    p=$(grep -E '^\[  PASSED  \] [0-9]+ test' "$log" | tail -1 | grep -oE '[0-9]+' | head -1)
    f=$(grep -E '^\[  FAILED  \] [0-9]+ test' "$log" | tail -1 | grep -oE '[0-9]+' | head -1)
    local plain
    plain=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$log" | tail -1)
    if [ -z "$p$f" ] && [ -n "$plain" ]; then
        p=$(echo "$plain" | grep -oE '^[0-9]+')
        f=$(echo "$plain" | grep -oE '[0-9]+ failed' | grep -oE '[0-9]+')
    fi
    if [ -n "$p$f" ]; then
        p=${p:-0}
        f=${f:-0}
        if [ $rc -ne 0 ] && [ "$f" = 0 ]; then f=1; fi
    elif [ $rc -eq 0 ]; then
        p=1 f=0
    else
        p=0 f=1
    fi
    passed=$((passed + p))
    failed=$((failed + f))
    if [ "$f" -gt 0 ]; then
        failed_names+=("$name")
        echo "FAIL $name (${dt}s, exit $rc): $log"
        tail -n 30 "$log" | sed 's/^/    /'
    else
        echo "ok   $name: $p passed (${dt}s)"
    fi
}

for t in "$build"/tests/test_*; do
    [ -x "$t" ] || continue
    name=$(basename "$t")
    [[ $name =~ $filter ]] || continue
    run_one "$name" "$t"
done
# Numerics under every forced kernel path (the default run above uses the best one).
for t in "$build"/tests/test_model "$build"/tests/test_model_random "$build"/tests/test_quant "$build"/tests/test_gemm "$build"/tests/test_repack "$build"/tests/test_repack_k "$build"/tests/test_attn "$build"/tests/test_act "$build"/tests/test_sha256; do
    [ -x "$t" ] || continue
    for isa in scalar avx2; do
        name="$(basename "$t")[isa=$isa]"
        [[ $name =~ $filter ]] || continue
        run_one "$name" env MESHLLM_ISA=$isa "$t"
    done
done
for t in "$build"/fuzz/*_replay; do
    [ -x "$t" ] || continue
    name=$(basename "$t" _replay)
    [[ $name =~ $filter ]] || continue
    corpus=tests/fuzz/corpus/${name#fuzz_}
    [ -d "$corpus" ] || continue
    run_one "$name-corpus" "$t" "$corpus"
done
for t in tests/*.test.sh; do
    [ -f "$t" ] || continue
    name=$(basename "$t" .test.sh)
    [[ $name =~ $filter ]] || continue
    run_one "$name" bash "$t"
done

echo
if [ ${#failed_names[@]} -gt 0 ]; then echo "failed: ${failed_names[*]}"; fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
