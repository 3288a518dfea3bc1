#!/usr/bin/env bash
# The issue-3 benchmark in one command: generate exports (once), build, measure, write bench/BENCHMARKS.md.
# Every contender also runs through a pipe (`cmd | cat > /dev/null`), and two copies of the largest
# ZIP are decrypted with --output-dir at once and one after the other (issue 16).
#
#   bash bench/run.sh                      # 100k and 1M rows + the 40 MiB-row export, 5 rounds
#   bash bench/run.sh --rows 250000 --rows 1000000 --rounds 7
#   bash bench/run.sh --quick              # 20k and 100k rows, 8 MiB row, 3 rounds; writes
#                                          # bench/work/BENCHMARKS.quick.md, not bench/BENCHMARKS.md
#
# Options: --rows N (repeatable), --rounds R, --huge-mib M (0: skip), --python-full-rows N (run
# the vendor's Python sample in every round up to N rows, in round 1 only above), --out FILE,
# --candidate BIN (another cipherstream build, e.g. a patched copy, measured in the same rounds),
# --isal (build with the `isal` feature too, issue 16 item 3, and measure that build as a
# candidate: needs `apt-get install libisal-dev`). By hand, the same is
#   cargo build --release --locked --features isal && cp target/release/cipherstream bench/work/cs-isal
#   bash bench/run.sh --candidate bench/work/cs-isal
# (copy it out: run.sh rebuilds target/release/cipherstream without the feature).
# Exports go to bench/work/ (gitignored) and are reused when present; delete a directory to
# regenerate it. Needs: Rust, Python 3 with `cryptography` (fixtures/requirements.txt), unzip,
# GNU time at /usr/bin/time. A missed target prints FAIL but does not fail the script: this is a
# measurement, not a test.
set -euo pipefail
cd "$(dirname "$0")/.."

rows=()
candidates=()
rounds=
huge=
py_full=100000
out=bench/BENCHMARKS.md
quick=0
isal=0
while (($#)); do
    case "$1" in
        --rows) rows+=("$2"); shift 2 ;;
        --rounds) rounds="$2"; shift 2 ;;
        --huge-mib) huge="$2"; shift 2 ;;
        --python-full-rows) py_full="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        --candidate) candidates+=(--candidate "$(realpath "$2")"); shift 2 ;;
        --quick) quick=1; shift ;;
        --isal) isal=1; shift ;;
        -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
        *) echo "run.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
if ((quick)); then
    ((${#rows[@]})) || rows=(20000 100000)
    rounds=${rounds:-3}
    huge=${huge:-8}
    [[ "$out" != bench/BENCHMARKS.md ]] || out=bench/work/BENCHMARKS.quick.md
fi
((${#rows[@]})) || rows=(100000 1000000)
rounds=${rounds:-5}
huge=${huge:-40}

for tool in /usr/bin/time unzip python3 cargo; do
    command -v "$tool" >/dev/null || { echo "run.sh: $tool is required" >&2; exit 1; }
done
python3 -c 'import cryptography' 2>/dev/null ||
    { echo "run.sh: Python needs cryptography: pip install -r fixtures/requirements.txt" >&2; exit 1; }

work=bench/work
mkdir -p "$work"
for n in "${rows[@]}"; do
    [[ -f "$work/rows_$n/meta.json" ]] || python3 bench/make_export.py --rows "$n" --out "$work/rows_$n"
done
if ((huge > 0)); then
    [[ -f "$work/huge_${huge}mib/meta.json" ]] ||
        python3 bench/make_export.py --huge-mib "$huge" --out "$work/huge_${huge}mib"
fi

if ((isal)); then
    # Built first and copied out: the default build below replaces target/release/cipherstream.
    echo "== cargo build --release --locked --features isal (the ISA-L candidate)" >&2
    cargo build --release --locked --features isal
    cp target/release/cipherstream "$work/cs-isal"
    candidates+=(--candidate "$(realpath "$work/cs-isal")")
fi
echo "== cargo build --release --locked" >&2
cargo build --release --locked
# The floor is a harness-less bench target; `cargo bench --no-run` builds it with the bench profile
# (which inherits release: same LTO, same zip/flate2/zlib-rs features) and reports where it is.
echo "== cargo bench --locked --bench inflate_only --no-run" >&2
inflate=$(cargo bench --locked --bench inflate_only --no-run --message-format=json |
    python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "inflate_only" and m.get("executable"):
        print(m["executable"])')
[[ -x "$inflate" ]] || { echo "run.sh: could not find the inflate_only bench binary" >&2; exit 1; }

command="bash bench/run.sh"
((quick)) && command+=" --quick"
for n in "${rows[@]}"; do command+=" --rows $n"; done
command+=" --rounds $rounds --huge-mib $huge"
((isal)) && command+=" --isal"

python3 bench/measure.py --cs target/release/cipherstream --inflate "$inflate" --work "$work" \
    --rows "${rows[@]}" --huge-mib "$huge" --rounds "$rounds" --python-full-rows "$py_full" \
    --out "$out" --command "$command" ${candidates[@]+"${candidates[@]}"}
