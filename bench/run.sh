#!/usr/bin/env bash
# Builds tessera-bench once in release and runs the issuance suite (DESIGN §10, issue 2
# point 15): for RS256, ES256 and EdDSA the raw signing rate, the empty-RPC rate on the
# same server stack, real issuance, the additive limit and the ratios. With --validate it
# then runs the sidecar suite (issue 3 point 7).
#
# Environment: BENCH_SECONDS (measured seconds per measurement, default 10),
# BENCH_WARMUP (default 2), BENCH_CONCURRENCY (default 64), BENCH_CONNECTIONS
# (default 4), BENCH_SERVER_NODELAY (default 1: the empty-RPC server sets TCP_NODELAY as the
# issuer's gRPC listener does; 0 shows what Nagle costs),
# CARGO_TARGET_DIR (as cargo).
set -euo pipefail
cd "$(dirname "$0")/.."

measure_seconds=${BENCH_SECONDS:-10}
warmup_seconds=${BENCH_WARMUP:-2}
concurrency=${BENCH_CONCURRENCY:-64}
connections=${BENCH_CONNECTIONS:-4}
nodelay=()
if [[ "${BENCH_SERVER_NODELAY:-1}" == 1 ]]; then nodelay=(--server-nodelay); fi
run_validate=false
for argument in "$@"; do
  case "$argument" in
    --validate) run_validate=true ;;
    *) echo "usage: bench/run.sh [--validate]" >&2; exit 64 ;;
  esac
done

cargo build --release -p tessera-bench
bench="${CARGO_TARGET_DIR:-target}/release/tessera-bench"

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "commit:  $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . || echo ' (with local changes)')"
echo "date:    $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "load:    $(cut -d' ' -f1-3 /proc/loadavg) (1, 5, 15 min) before the run"

timing=(--seconds "$measure_seconds" --warmup "$warmup_seconds")
"$bench" all-issue --concurrency "$concurrency" --connections "$connections" "${nodelay[@]}" "${timing[@]}"
echo "load:    $(cut -d' ' -f1-3 /proc/loadavg) after the issuance suite"

if $run_validate; then
  "$bench" all-validate --concurrency "$concurrency" --connections "$connections" "${timing[@]}"
  echo "load:    $(cut -d' ' -f1-3 /proc/loadavg) after the validation suite"
fi
