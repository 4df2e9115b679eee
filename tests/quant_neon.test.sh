#!/usr/bin/env bash
# quant_neon.test.sh - the NEON kernels (engine/kernels_neon.c) against the scalar
# reference on aarch64 under qemu-user: cross-compiles tests/neon/quant_neon_check.c with
# the quant sources twice (baseline armv8-a, and armv8.2-a+dotprod for the sdot path)
# and runs both. Skips cleanly (exit 0) when the cross compiler or qemu is missing.
set -u
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
cc=aarch64-linux-gnu-gcc
qemu=qemu-aarch64
sysroot=/usr/aarch64-linux-gnu
if ! command -v "$cc" >/dev/null 2>&1 || ! command -v "$qemu" >/dev/null 2>&1 || [ ! -d "$sysroot" ]; then
    echo "skipped: $cc or $qemu (or $sysroot) not installed"
    exit 0
fi
out=${MESHLLM_BUILD:-build}/neon
mkdir -p "$out"
srcs="engine/quant.c engine/quant_ref.c engine/kernels_neon.c core/log.c tests/neon/quant_neon_check.c"
flags="-std=c11 -O2 -I. -D_GNU_SOURCE -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Werror"
status=0
for march in armv8-a armv8.2-a+dotprod; do
    bin=$out/quant_neon_check-${march//[.+]/_}
    if ! $cc $flags -march=$march $srcs -o "$bin" -lm -lpthread; then
        echo "FAIL: cross compile ($march)"
        status=1
        continue
    fi
    echo "== $march"
    if ! MESHLLM_ISA= "$qemu" -cpu max -L "$sysroot" "$bin"; then status=1; fi
done
exit $status
