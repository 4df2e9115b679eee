# ensure_deps.sh - sourced by tests/net_*interop.test.sh: installs the pinned js-libp2p
# packages (package-lock.json) into tests/interop/node_modules with `npm ci` when the lock
# file changed since the last install. Serialised with flock: several test runs may share the
# tree. Calls fail() (defined by the caller) if npm cannot install; never skips.
ensure_interop_deps() { # dir workdir
    local dir=$1 work=$2 sum
    command -v node >/dev/null || fail "node is not installed (needed for the js-libp2p peers)"
    command -v npm >/dev/null || fail "npm is not installed (needed for the js-libp2p peers)"
    exec 9>"${TMPDIR:-/tmp}/meshllm-interop-npm.lock"
    flock 9
    sum=$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)
    if [ "$(cat "$dir/node_modules/.meshllm-lock-sha256" 2>/dev/null)" != "$sum" ]; then
        echo "installing js-libp2p test dependencies (npm ci)..."
        if ! (cd "$dir" && npm ci --no-audit --no-fund >"$work/npm.out" 2>&1); then
            flock -u 9
            fail "npm ci failed (is the npm registry reachable?); see output below"
        fi
        echo "$sum" >"$dir/node_modules/.meshllm-lock-sha256"
    fi
    flock -u 9
}
