#!/usr/bin/env bash
# store_merkle.test.sh - content IDs (node/merkle.c) against an independent BEP 52
# implementation (tests/util/merkle_ref.py, hashlib only) on random files of the sizes that
# matter (empty, one byte, a block -1/0/+1, a piece +-1, several MiB), two piece lengths.
# Prints "N passed, N failed".
set -u
build=${MESHLLM_BUILD:-build}
work=$(mktemp -d "${TMPDIR:-/tmp}/meshllm-merkle-XXXXXX")
trap 'rm -rf "$work"' EXIT
passed=0
failed=0
for size in 0 1 16383 16384 16385 262143 262144 1048575 1048576 1048577 5000000; do
    head -c "$size" /dev/urandom >"$work/f"
    for piece in 1048576 262144; do
        want=$(python3 tests/util/merkle_ref.py "$work/f" "$piece")
        got=$("$build/tests/test_merkle" --root "$work/f" "$piece")
        if [ -n "$want" ] && [ "$want" = "$got" ]; then
            passed=$((passed + 1))
        else
            failed=$((failed + 1))
            echo "FAIL: size $size piece $piece: want '$want' got '$got'"
        fi
    done
done
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
