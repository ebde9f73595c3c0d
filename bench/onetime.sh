#!/usr/bin/env bash
# Builds tessera-bench and tessera-issuer once in release and runs the single-use token
# benchmark of issue 11 (point 9): ConsumeActionToken at `tessera-issuer serve` on
# PostgreSQL over distinct action links (minted beforehand, each consumed at most once) —
# target ≥ 2,000/s with zero double consumption (consumed answers = rows with used_at,
# no jti twice, a sample of used links replayed: every one ALREADY_USED).
# The issuer runs under `taskset -c $BENCH_SERVER_CPUS` (default 0), the load generator
# under $BENCH_CLIENT_CPUS (default 1). PostgreSQL is the machine's own server, unpinned.
#
# Environment: TESSERA_TEST_DATABASE_URL (PostgreSQL server, required; a scratch database
# is created on it and dropped), BENCH_LINKS (default 60000: size it to rate × (warm-up +
# seconds) × repeats), BENCH_SECONDS (default 5), BENCH_WARMUP (default 1),
# BENCH_REPEATS (default 3), BENCH_MAX_FOREIGN_CPU (default 0.10), BENCH_ATTEMPTS
# (default 4), BENCH_CONCURRENCY (default 64), BENCH_CONNECTIONS (default 4),
# BENCH_SERVER_CPUS, BENCH_CLIENT_CPUS, CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."

server_cpus=${BENCH_SERVER_CPUS:-0}
client_cpus=${BENCH_CLIENT_CPUS:-1}
: "${TESSERA_TEST_DATABASE_URL:=postgres://postgres@127.0.0.1:5432/test}"
export TESSERA_TEST_DATABASE_URL

cargo build --release -p tessera-bench -p tessera-issuer
bench="${CARGO_TARGET_DIR:-target}/release/tessera-bench"

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "commit:  $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . || echo ' (with local changes)')"
echo "date:    $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "pinning: issuer taskset -c $server_cpus, load generator taskset -c $client_cpus; PostgreSQL unpinned"
echo "load:    $(cut -d' ' -f1-3 /proc/loadavg) (1, 5, 15 min) before the run"

"$bench" --server-cpus "$server_cpus" --client-cpus "$client_cpus" onetime \
  --links "${BENCH_LINKS:-60000}" \
  --concurrency "${BENCH_CONCURRENCY:-64}" --connections "${BENCH_CONNECTIONS:-4}" \
  --seconds "${BENCH_SECONDS:-5}" --warmup "${BENCH_WARMUP:-1}" \
  --repeats "${BENCH_REPEATS:-3}" --max-foreign-cpu "${BENCH_MAX_FOREIGN_CPU:-0.10}" \
  --attempts "${BENCH_ATTEMPTS:-4}"
echo "load:    $(cut -d' ' -f1-3 /proc/loadavg) after the run"
