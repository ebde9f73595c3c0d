#!/usr/bin/env bash
# Role: generates the Python gRPC stubs of Tessera's API (package tessera.v1) from proto/
# with grpcio-tools, into OUT_DIR (default: generated/ next to this script), and prints
# OUT_DIR. Put OUT_DIR on PYTHONPATH: the stubs import each other as `tessera.v1.…`.
#
# Usage: examples/python/generate.sh [OUT_DIR] [PROTO_DIR]
#   PROTO_DIR defaults to the repository's proto/ (the Dockerfile passes its copy).
#   PYTHON selects the interpreter (it needs grpcio-tools: pip install -r requirements.txt).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${1:-$here/generated}"
proto="${2:-$here/../../proto}"
python="${PYTHON:-python3}"

mkdir -p "$out"
"$python" -m grpc_tools.protoc \
    --proto_path "$proto" \
    --python_out "$out" \
    --pyi_out "$out" \
    --grpc_python_out "$out" \
    "$proto"/tessera/v1/*.proto
echo "$out"
