#!/usr/bin/env bash
# A/B of sidecar builds by CPU cost per validation, for a machine that is not quiet.
#
# Usage: bench/ab_cost.sh <mode> <tokens> <bin dir>...   (mode unary|stream, tokens
# distinct|repeat; each bin dir holds a tessera-sidecar and a tessera-issuer)
#
# For each directory in turn, runs `tessera-bench validate` (6 s measured after 1 s of
# warm-up, the usual pinning: sidecar on core 0, load generator on core 1) and, from the
# 2nd to the 6th second, counts the sidecar process's CPU time with `perf stat -e
# task-clock`. Prints the rate, the sidecar's CPU share, and CPU µs per validation =
# CPU time / (rate × 4 s). Another process on core 0 lowers the rate but barely the
# cost per validation, so alternating builds compares them while others compile; the
# DESIGN §10 ratios still need a quiet run (bench/run.sh --validate).
# Needs perf, pgrep, python3; TESSERA_BENCH (default target/release/tessera-bench).
set -euo pipefail
cd "$(dirname "$0")/.."
mode=$1; tokens=$2; shift 2
bench=${TESSERA_BENCH:-target/release/tessera-bench}
for dir in "$@"; do
  dir=$(cd "$dir" && pwd)
  out=$(mktemp)
  TESSERA_BIN_DIR=$dir "$bench" --no-telemetry validate --mode "$mode" --tokens "$tokens" \
    --seconds 6 --warmup 1 >"$out" 2>&1 &
  bench_pid=$!
  sleep 2
  sidecar=$(pgrep -f "^$dir/tessera-sidecar" | head -1)
  cpu_ms=$(perf stat -x, -e task-clock -p "$sidecar" -- sleep 4 2>&1 | grep task-clock | cut -d, -f1)
  wait "$bench_pid"
  line=$(grep "^validate " "$out")
  rm -f "$out"
  # The rate is the first of the two adjacent integer columns (ops/s, ops).
  rate=$(echo "$line" | awk '{for (i = 1; i < NF; i++) if ($i ~ /^[0-9]+$/ && $(i+1) ~ /^[0-9]+$/) {print $i; exit}}')
  other=$(echo "$line" | awk '{print $NF}')
  python3 -c "
rate, cpu = $rate, $cpu_ms
print(f'{\"$dir\"}: $mode $tokens {rate:>8.0f}/s  sidecar cpu {cpu / 40:5.1f} %  '
      f'{cpu * 1000 / (rate * 4):6.2f} µs/validation (≈ {rate * 4 / (cpu / 1000):,.0f}/s on a whole core)  other $other')"
done
