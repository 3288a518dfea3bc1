#!/usr/bin/env bash
# Build the fuzz targets and run each for a bounded time, one after another, one process at a time.
#
#   bash fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]     default: 600 s; line container export json roundtrip
#
# Works on a STABLE toolchain: see fuzz/README.md. Exit status 1 if any target found a crash
# (the input is in fuzz/artifacts/<target>/, the log in fuzz/logs/<target>.log).
set -euo pipefail
cd "$(dirname "$0")/.."

secs="${1:-600}"
shift || true
if [ $# -eq 0 ]; then
    set -- line container export json roundtrip
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "error: cargo-fuzz is not installed" >&2
    echo "hint: cargo install cargo-fuzz --locked" >&2
    exit 1
fi

# cargo-fuzz builds with unstable compiler flags (-Zsanitizer=address and the sanitizer-coverage
# passes libFuzzer needs). RUSTC_BOOTSTRAP=1 makes this stable rustc accept them. It is set here,
# for this fuzz build of this script only; the shipped binary is built by a plain `cargo build`.
export RUSTC_BOOTSTRAP=1

python3 fuzz/seed_corpus.py
cargo fuzz build --release
mkdir -p fuzz/logs

# Inputs up to 64 KiB (lines up to 16 KiB) keep executions fast; any single allocation over
# 256 MiB is a bug for inputs this small (memory must stay bounded), and so is a run over 30 s.
declare -A max_len=([line]=16384 [container]=65536 [export]=65536 [json]=16384 [roundtrip]=65536)
failed=()
for t in "$@"; do
    echo "== fuzzing $t for ${secs}s (log: fuzz/logs/$t.log)"
    if ! cargo fuzz run "$t" "fuzz/corpus/$t" -- \
        -max_total_time="$secs" \
        -max_len="${max_len[$t]:-65536}" \
        -dict=fuzz/cipherstream.dict \
        -timeout=30 \
        -rss_limit_mb=2048 \
        -malloc_limit_mb=256 \
        -print_final_stats=1 \
        >"fuzz/logs/$t.log" 2>&1; then
        failed+=("$t")
        echo "   $t FAILED: see fuzz/logs/$t.log and fuzz/artifacts/$t/"
    fi
    grep -E '^(#[0-9]+.*DONE|Done [0-9]+ runs|stat::)' "fuzz/logs/$t.log" | sed 's/^/   /' || true
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "crashes found in: ${failed[*]}" >&2
    exit 1
fi
echo "no crashes"
