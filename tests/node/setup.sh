#!/usr/bin/env bash
# Role: installs the Node.js gRPC client packages pinned in package-lock.json (@grpc/grpc-js,
# @grpc/proto-loader) into a directory and prints that directory; NODE_PATH=<dir>/node_modules
# then resolves them. Idempotent: re-running is a no-op unless package.json or
# package-lock.json changed. Concurrent runs on one directory wait for each other.
#
# Usage: tests/node/setup.sh [INSTALL_DIR]   (default: <workspace>/target/e2e-node,
#        honouring CARGO_TARGET_DIR)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
workspace="$(cd "$here/../.." && pwd)"
dir="${1:-${CARGO_TARGET_DIR:-$workspace/target}/e2e-node}"
npm="${NPM:-npm}"

mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
stamp="$dir/.lock.sha256"
wanted="$(cat "$here/package.json" "$here/package-lock.json" | sha256sum | cut -d' ' -f1)"

exec 9>"$dir/.setup.lock"
flock 9
if [[ -d "$dir/node_modules" && -f "$stamp" && "$(cat "$stamp")" == "$wanted" ]]; then
    echo "$dir"
    exit 0
fi

cp "$here/package.json" "$here/package-lock.json" "$dir/"
rm -f "$stamp"
# `npm ci` installs exactly the lockfile; no install scripts are needed (protobufjs's
# postinstall only prints a version warning).
(cd "$dir" && "$npm" ci --ignore-scripts --no-audit --no-fund --loglevel=error >&2)
echo "$wanted" >"$stamp"
echo "$dir"
