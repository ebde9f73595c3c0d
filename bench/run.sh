#!/usr/bin/env bash
# Builds tessera-bench, tessera-issuer and tessera-sidecar once in release and runs the
# issuance suite (DESIGN §10, issue 2 point 15): for RS256, ES256 and EdDSA the raw signing
# rate (one thread on the server core), the empty-RPC rate (a `tessera-bench serve-empty`
# process answering a copy of the issuer's answer), real issuance by a `tessera-issuer
# serve` process, the additive limit and the ratios. With --validate it then runs the
# sidecar suite (issue 3 point 7) against `tessera-sidecar` and `tessera-issuer`
# processes. With --validate-only, only the sidecar suite.
#
# Every server (issuer, sidecar, empty server, raw crypto loop) runs as its own process
# under `taskset -c $BENCH_SERVER_CPUS` (default 0); the load generator pins itself to
# $BENCH_CLIENT_CPUS (default 1). DESIGN §10: "A benchmark where client and server share
# a runtime measures the harness."
#
# Environment: BENCH_SECONDS (measured seconds per sample, default 10), BENCH_WARMUP
# (default 2), BENCH_REPEATS (samples per quantity, median reported, default 3),
# BENCH_MAX_FOREIGN_CPU (a sample during which other processes used more of the machine
# than this share is taken again, up to BENCH_ATTEMPTS times, default 4; default 0.10,
# 1 accepts every sample),
# BENCH_CONCURRENCY (default 64), BENCH_CONNECTIONS (default 4), BENCH_SERVER_NODELAY
# (default 1: the empty issuance server sets TCP_NODELAY as the issuer's gRPC listener
# does), BENCH_SERVER_CPUS, BENCH_CLIENT_CPUS (taskset lists, `none` to unpin),
# CARGO_TARGET_DIR (as cargo).
set -euo pipefail
cd "$(dirname "$0")/.."

measure_seconds=${BENCH_SECONDS:-10}
warmup_seconds=${BENCH_WARMUP:-2}
repeats=${BENCH_REPEATS:-3}
max_foreign=${BENCH_MAX_FOREIGN_CPU:-0.10}
attempts=${BENCH_ATTEMPTS:-4}
concurrency=${BENCH_CONCURRENCY:-64}
connections=${BENCH_CONNECTIONS:-4}
server_cpus=${BENCH_SERVER_CPUS:-0}
client_cpus=${BENCH_CLIENT_CPUS:-1}
nodelay=()
if [[ "${BENCH_SERVER_NODELAY:-1}" == 1 ]]; then nodelay=(--server-nodelay); fi
run_issue=true
run_validate=false
for argument in "$@"; do
  case "$argument" in
    --validate) run_validate=true ;;
    --validate-only) run_validate=true; run_issue=false ;;
    *) echo "usage: bench/run.sh [--validate | --validate-only]" >&2; exit 64 ;;
  esac
done

cargo build --release -p tessera-bench -p tessera-issuer -p tessera-sidecar
bench="${CARGO_TARGET_DIR:-target}/release/tessera-bench"

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "commit:  $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . || echo ' (with local changes)')"
echo "date:    $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "pinning: servers taskset -c $server_cpus, load generator taskset -c $client_cpus"
echo "load:    $(cut -d' ' -f1-3 /proc/loadavg) (1, 5, 15 min) before the run"

common=(--server-cpus "$server_cpus" --client-cpus "$client_cpus")
timing=(--seconds "$measure_seconds" --warmup "$warmup_seconds" --repeats "$repeats"
  --max-foreign-cpu "$max_foreign" --attempts "$attempts")
if $run_issue; then
  "$bench" "${common[@]}" all-issue --concurrency "$concurrency" --connections "$connections" \
    "${nodelay[@]}" "${timing[@]}"
  echo "load:    $(cut -d' ' -f1-3 /proc/loadavg) after the issuance suite"
fi

if $run_validate; then
  "$bench" "${common[@]}" all-validate --concurrency "$concurrency" \
    --connections "$connections" "${timing[@]}"
  echo "load:    $(cut -d' ' -f1-3 /proc/loadavg) after the validation suite"
fi
