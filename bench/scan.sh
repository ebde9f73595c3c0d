#!/usr/bin/env bash
# Measures `tessera-issuer scan` (issue 10, point 6: ≥ 50 MB/s on one core on a corpus of
# source files). Builds the issuer once in release, builds a corpus of source files —
# copies of the workspace's own .rs, .proto, .md and .toml files, with a few real
# credentials of every kind planted — then times the real binary pinned to one core
# (`taskset -c $BENCH_SCAN_CPU`, default 1). The corpus is read once first so the page
# cache holds it: what is measured is the scanner, not the disk. Prints the median of
# BENCH_REPEATS runs (default 5) and the ratio to the 50 MB/s target, with the load
# average before and after.
#
# Environment: BENCH_SCAN_MB (corpus size, default 128), BENCH_SCAN_CPU, BENCH_REPEATS,
# BENCH_SCAN_DIR (default: a temporary directory, removed afterwards), CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."

corpus_mb=${BENCH_SCAN_MB:-128}
cpu=${BENCH_SCAN_CPU:-1}
repeats=${BENCH_REPEATS:-5}
target_dir=${CARGO_TARGET_DIR:-target}

cargo build --quiet --release -p tessera-issuer --bin tessera-issuer
issuer="$target_dir/release/tessera-issuer"

if [[ -n "${BENCH_SCAN_DIR:-}" ]]; then
    corpus=$BENCH_SCAN_DIR
    mkdir -p "$corpus"
else
    corpus=$(mktemp -d)
    trap 'rm -rf "$corpus"' EXIT
fi

# The workspace's source files (not target/, not third_party/), copied into numbered
# directories until the corpus reaches its size.
mapfile -t sources < <(git ls-files -- '*.rs' '*.proto' '*.md' '*.toml' ':!third_party')
source_bytes=$(cat "${sources[@]}" | wc -c)
copies=$(( (corpus_mb * 1024 * 1024 + source_bytes - 1) / source_bytes ))
for ((copy = 0; copy < copies; copy++)); do
    for source in "${sources[@]}"; do
        destination="$corpus/$copy/$source"
        mkdir -p "$(dirname "$destination")"
        cp "$source" "$destination"
    done
done
# Plant one credential of every kind in the first copy, so the run does real work.
planted=$("$issuer" scan --json "$corpus" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["findings"]))' || true)
python3 - "$corpus/0" <<'PY'
import os, random, string, sys, zlib
ALPHABET = string.digits + string.ascii_uppercase + string.ascii_lowercase
def base62(n):
    return "".join(random.SystemRandom().choice(ALPHABET) for _ in range(n))
def checksum(text):
    value = zlib.crc32(text.encode())
    out = ""
    for _ in range(6):
        out = ALPHABET[value % 62] + out
        value //= 62
    return out
for prefix in ["tbk_", "tbc_", "tbf_", "tbs_", "tbw_"]:
    body = f"{prefix}{base62(16)}_{base62(43)}"
    with open(os.path.join(sys.argv[1], f"planted_{prefix}.rs"), "w") as planted:
        planted.write(f'const LEAKED: &str = "{body}{checksum(body)}";\n')
PY
found=$("$issuer" scan --json "$corpus" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["findings"]))' || true)
echo "corpus: $corpus ($(du -sh "$corpus" | cut -f1), $(find "$corpus" -type f | wc -l) files); credentials before planting: $planted, after: $found"
if [[ "$found" -ne $((planted + 5)) ]]; then
    echo "error: expected $((planted + 5)) findings" >&2
    exit 1
fi

echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
rates=()
for ((run = 0; run < repeats; run++)); do
    start=$(date +%s.%N)
    set +e
    taskset -c "$cpu" "$issuer" scan --json "$corpus" > "$corpus.json"
    code=$?
    set -e
    end=$(date +%s.%N)
    [[ $code -eq 1 ]] || { echo "error: scan exited $code, expected 1" >&2; exit 1; }
    bytes=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["bytes_scanned"])' "$corpus.json")
    rate=$(python3 -c "print(f'{$bytes / 1e6 / ($end - $start):.1f}')")
    echo "run $run: $bytes bytes in $(python3 -c "print(f'{$end - $start:.3f}')") s: $rate MB/s"
    rates+=("$rate")
done
rm -f "$corpus.json"
median=$(printf '%s\n' "${rates[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "scan: median $median MB/s on one core (cpu $cpu) = $(python3 -c "print(f'{$median / 50:.1f}')") × the 50 MB/s target"
