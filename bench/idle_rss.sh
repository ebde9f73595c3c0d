#!/usr/bin/env bash
# Idle resident memory of the release sidecar (issue 3 point 7, DESIGN §10: < 20 MiB).
# Starts the release issuer on a temporary data directory, creates a `bundle:read`
# credential with the CLI, starts the release sidecar against it, waits until the sidecar
# serves (/readyz 200, i.e. it holds a bundle), lets it idle, then prints VmRSS and VmHWM
# from /proc. Usage: bench/idle_rss.sh [idle seconds, default 10]
set -euo pipefail
cd "$(dirname "$0")/.."

idle_seconds=${1:-10}
cargo build --release -q -p tessera-issuer -p tessera-sidecar
target="${CARGO_TARGET_DIR:-target}/release"
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
grpc_port=$(free_port)
http_port=$(free_port)
sidecar_http_port=$(free_port)

RUST_LOG=warn "$target/tessera-issuer" serve --data-dir "$work/issuer" \
  --grpc-addr "127.0.0.1:$grpc_port" --http-addr "127.0.0.1:$http_port" &
pids+=($!)
for _ in $(seq 100); do
  curl -fs "http://127.0.0.1:$http_port/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done

"$target/tessera-issuer" clients create --name rss-sidecar --scope bundle:read \
  --addr "http://127.0.0.1:$grpc_port" --data-dir "$work/issuer" >"$work/sidecar.token"

RUST_LOG=warn "$target/tessera-sidecar" --issuer-addr "http://127.0.0.1:$grpc_port" \
  --issuer-token-file "$work/sidecar.token" --socket "$work/sidecar.sock" \
  --bundle-cache "$work/bundle.json" --http-addr "127.0.0.1:$sidecar_http_port" &
sidecar=$!
pids+=("$sidecar")
for _ in $(seq 100); do
  curl -fs "http://127.0.0.1:$sidecar_http_port/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fs "http://127.0.0.1:$sidecar_http_port/readyz" >/dev/null || {
  echo "the sidecar did not become ready" >&2
  exit 1
}

sleep "$idle_seconds"
rss_kib=$(awk '/^VmRSS/ {print $2}' "/proc/$sidecar/status")
hwm_kib=$(awk '/^VmHWM/ {print $2}' "/proc/$sidecar/status")
threads=$(awk '/^Threads/ {print $2}' "/proc/$sidecar/status")
size=$(stat -c %s "$target/tessera-sidecar")
printf 'sidecar idle after %ss: VmRSS %.1f MiB, VmHWM %.1f MiB, %s threads, binary %.1f MiB\n' \
  "$idle_seconds" "$(echo "$rss_kib/1024" | bc -l)" "$(echo "$hwm_kib/1024" | bc -l)" \
  "$threads" "$(echo "$size/1048576" | bc -l)"
printf '{"bench":"sidecar-idle-rss","idle_seconds":%s,"vm_rss_kib":%s,"vm_hwm_kib":%s,"threads":%s,"binary_bytes":%s}\n' \
  "$idle_seconds" "$rss_kib" "$hwm_kib" "$threads" "$size"
