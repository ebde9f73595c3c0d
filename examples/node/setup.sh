#!/usr/bin/env bash
# Role: installs the Node example's dependencies (package-lock.json, exactly) into
# DIR/node_modules and prints DIR; the example then runs in place with NODE_PATH set to
# DIR/node_modules. Idempotent: re-running is a no-op unless package.json or
# package-lock.json changed. Concurrent runs on one directory wait for each other.
# (For your own checkout, `npm ci` in examples/node does the same in place.)
#
# Usage: examples/node/setup.sh [DIR]   (default: <workspace>/target/examples-node,
#        honouring CARGO_TARGET_DIR)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
workspace="$(cd "$here/../.." && pwd)"
dir="${1:-${CARGO_TARGET_DIR:-$workspace/target}/examples-node}"
stamp="$dir/.package-lock.sha256"

wanted="$(cat "$here/package.json" "$here/package-lock.json" | sha256sum | cut -d' ' -f1)"
mkdir -p "$dir"
exec 9>"$dir/.setup.lock"
flock 9
if [[ -d "$dir/node_modules" && -f "$stamp" && "$(cat "$stamp")" == "$wanted" ]]; then
    echo "$dir"
    exit 0
fi

cp "$here/package.json" "$here/package-lock.json" "$dir/"
rm -f "$stamp"
# --ignore-scripts: no dependency needs an install script (protobufjs's only prints a
# version warning).
(cd "$dir" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >&2)
echo "$wanted" >"$stamp"
echo "$dir"
