#!/usr/bin/env bash
# Build the fuzz targets and run each for a bounded time, one after another, one process at a time.
#
#   bash fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]     default: 600 s; line container export json roundtrip inflate
#   bash fuzz/run.sh 5                                     the smoke run CI does: every target 5 s
#
# Works on a STABLE toolchain: see fuzz/README.md. Exit status 1 if any target found a crash
# (the input is in fuzz/artifacts/<target>/, the log in fuzz/logs/<target>.log; the report is printed).
set -euo pipefail
cd "$(dirname "$0")/.."

# Inputs up to 64 KiB (lines up to 16 KiB) keep executions fast; any single allocation over
# 256 MiB is a bug for inputs this small (memory must stay bounded), and so is a run over 30 s.
declare -A max_len=([line]=16384 [container]=65536 [export]=65536 [json]=16384 [roundtrip]=65536 [inflate]=65536)
# Cargo features a target is built with: `inflate` compares ISA-L with zlib-rs, so it needs the
# `isal` feature (and the system's libisal: `apt-get install libisal-dev`); the others fuzz the
# default build.
declare -A features=([inflate]="--features isal")

secs="${1:-600}"
shift || true
if ! [[ "$secs" =~ ^[1-9][0-9]*$ ]]; then
    sed -n '2,5s/^# \{0,1\}//p' "$0" >&2
    exit 2
fi
if [ $# -eq 0 ]; then
    set -- line container export json roundtrip inflate
fi
for t in "$@"; do
    if [ -z "${max_len[$t]:-}" ]; then
        echo "error: no fuzz target '$t' (targets: ${!max_len[*]})" >&2
        exit 2
    fi
done

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "error: cargo-fuzz is not installed" >&2
    echo "hint: cargo install cargo-fuzz --version 0.13.2 --locked" >&2
    exit 1
fi

# cargo-fuzz builds with unstable compiler flags (-Zsanitizer=address and the sanitizer-coverage
# passes libFuzzer needs). RUSTC_BOOTSTRAP=1 makes this stable rustc accept them. It is set here,
# for this fuzz build of this script only; the shipped binary is built by a plain `cargo build`.
export RUSTC_BOOTSTRAP=1

# cargo-fuzz has no --locked: check the lock file first, so the build never re-resolves it and
# the fuzzed dependencies stay the versions in fuzz/Cargo.lock.
host="$(rustc -vV | sed -n 's/^host: //p')"
if ! cargo fetch --quiet --locked --manifest-path fuzz/Cargo.toml --target "$host"; then
    echo "hint: fuzz/Cargo.lock is behind a Cargo.toml; update it (cd fuzz && cargo update --workspace) and commit it" >&2
    exit 1
fi

python3 fuzz/seed_corpus.py
# The same build options as `cargo fuzz run` below (optimised, with debug assertions), so the
# targets are built once, here. (`--release` would drop the debug assertions, and every
# `cargo fuzz run` would then rebuild with them.)
cargo fuzz build
for t in "$@"; do
    if [ -n "${features[$t]:-}" ]; then
        # shellcheck disable=SC2086 # the flags are words
        cargo fuzz build ${features[$t]} "$t"
    fi
done
mkdir -p fuzz/logs

# What a CI log must show of a failed run (its files do not outlive the machine): the start of the
# crash report (a panic's message, a sanitizer's or libFuzzer's error) and the input, in Base64.
report() {
    local start
    start="$(grep -n -m1 -E 'panicked at|^==[0-9]+== ?ERROR' "$1" | cut -d: -f1)" || true
    if [ -n "$start" ]; then
        sed -n "${start},$((start + 24))p" "$1"
        echo "..."
        grep -E '^(SUMMARY|artifact_prefix|Base64)' "$1" || true
    else
        tail -n 30 "$1"
    fi
}

failed=()
for t in "$@"; do
    echo "== fuzzing $t for ${secs}s (log: fuzz/logs/$t.log)"
    # shellcheck disable=SC2086 # the flags are words
    if ! cargo fuzz run ${features[$t]:-} "$t" "fuzz/corpus/$t" -- \
        -max_total_time="$secs" \
        -max_len="${max_len[$t]}" \
        -dict=fuzz/cipherstream.dict \
        -timeout=30 \
        -rss_limit_mb=2048 \
        -malloc_limit_mb=256 \
        -print_final_stats=1 \
        >"fuzz/logs/$t.log" 2>&1; then
        failed+=("$t")
        echo "   $t FAILED: see fuzz/logs/$t.log and fuzz/artifacts/$t/"
        report "fuzz/logs/$t.log" | sed 's/^/   | /'
    fi
    grep -E '^(#[0-9]+.*DONE|Done [0-9]+ runs|stat::)' "fuzz/logs/$t.log" | sed 's/^/   /' || true
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "crashes found in: ${failed[*]}" >&2
    exit 1
fi
echo "no crashes"
