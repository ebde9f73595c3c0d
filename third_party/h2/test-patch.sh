#!/usr/bin/env bash
# Role: runs the vendored h2's own unit tests (the library's, including the TESSERA PATCH
# tests in src/server.rs) outside the Tessera workspace, which does not build a patched
# dependency's tests. Works on a temporary copy: its own [workspace], h2's shipped
# Cargo.lock, and without the two dev-dependencies only h2's examples and integration tests
# use (tokio-rustls, webpki-roots), so no TLS stack is built.
#
# Usage: third_party/h2/test-patch.sh [TEST ARGS...]   (default: tessera_authority, the
#        patch's tests; `--skip hpack::test::fixture` runs the rest of the library's tests
#        that can run here: the HPACK fixture tests read upstream's fixtures/, which the
#        published crate does not ship)
# Target directory: <workspace>/target/h2-patch-tests (honouring CARGO_TARGET_DIR).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
workspace="$(cd "$here/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$workspace/target}/h2-patch-tests"
copy="$(mktemp -d)"
trap 'rm -rf "$copy"' EXIT

cp -r "$here/src" "$here/Cargo.lock" "$copy/"
python3 - "$here/Cargo.toml" "$copy/Cargo.toml" <<'PY'
import re, sys
manifest = open(sys.argv[1], encoding="utf-8").read()
for dependency in ("tokio-rustls", "webpki-roots"):
    manifest = re.sub(r"\n\[dev-dependencies\.%s\]\n[^\[]*" % dependency, "\n", manifest)
# Only the library: examples and benches are not copied.
manifest = re.sub(r"\n\[\[(example|bench)\]\]\n[^\[]*", "\n", manifest)
open(sys.argv[2], "w", encoding="utf-8").write(manifest + "\n[workspace]\n")
PY
if [[ $# -eq 0 ]]; then
    set -- tessera_authority
fi
cargo test --manifest-path "$copy/Cargo.toml" --target-dir "$target" --lib -- "$@"
