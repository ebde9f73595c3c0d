#!/usr/bin/env bash
# Builds tessera-bench, tessera-issuer and tessera-sidecar once in release and runs the
# secret-read benchmark of issue 12 (point 7): GetSecret at the sidecar on a cached secret
# against the empty unary RPC (grpc.health.v1 Check) on the same socket of the same
# sidecar, in the same run — target ≥ 80 %.
# The issuer and the sidecar run under `taskset -c $BENCH_SERVER_CPUS` (default 0), the
# load generator under $BENCH_CLIENT_CPUS (default 1).
#
# Environment: BENCH_SECONDS (default 5), BENCH_WARMUP (default 1), BENCH_REPEATS
# (default 3), BENCH_MAX_FOREIGN_CPU (default 0.10), BENCH_ATTEMPTS (default 4),
# BENCH_CONCURRENCY (default 64), BENCH_CONNECTIONS (default 4), BENCH_VALUE_LENGTH
# (default 48), BENCH_INCLUDE_PREVIOUS (1: ask for previous too), BENCH_SERVER_CPUS,
# BENCH_CLIENT_CPUS, CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."

server_cpus=${BENCH_SERVER_CPUS:-0}
client_cpus=${BENCH_CLIENT_CPUS:-1}

cargo build --release -p tessera-bench -p tessera-issuer -p tessera-sidecar
bench="${CARGO_TARGET_DIR:-target}/release/tessera-bench"

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "commit:  $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . || echo ' (with local changes)')"
echo "date:    $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "pinning: servers taskset -c $server_cpus, load generator taskset -c $client_cpus"
echo "load:    $(cut -d' ' -f1-3 /proc/loadavg) (1, 5, 15 min) before the run"

extra=()
if [ "${BENCH_INCLUDE_PREVIOUS:-0}" = 1 ]; then
  extra+=(--include-previous)
fi
"$bench" --server-cpus "$server_cpus" --client-cpus "$client_cpus" secrets \
  --value-length "${BENCH_VALUE_LENGTH:-48}" \
  --concurrency "${BENCH_CONCURRENCY:-64}" --connections "${BENCH_CONNECTIONS:-4}" \
  --seconds "${BENCH_SECONDS:-5}" --warmup "${BENCH_WARMUP:-1}" \
  --repeats "${BENCH_REPEATS:-3}" --max-foreign-cpu "${BENCH_MAX_FOREIGN_CPU:-0.10}" \
  --attempts "${BENCH_ATTEMPTS:-4}" "${extra[@]}"
echo "load:    $(cut -d' ' -f1-3 /proc/loadavg) after the run"
