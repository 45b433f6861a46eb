#!/usr/bin/env bash
# Runs the fuzz targets for longer than the normal suite does: each target
# gets PROPTEST_CASES=${1:-200000} generated cases, in release mode.
#
#   bash fuzz/run.sh            # 200,000 cases per target
#   bash fuzz/run.sh 5000       # a quick look
#   bash fuzz/run.sh 1000000 pack   # one target
#
# Prints one line per target: cases, failures, seconds. A failure is shrunk,
# reported with its smallest input, and stored in fuzz/regressions/.
set -euo pipefail

cases=${1:-200000}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(request manifest pack meta)
fi
cd "$(dirname "$0")/.."

test_of() {
    case $1 in
    request) echo protocol::fuzz::request ;;
    manifest | pack | meta) echo "remote::fuzz::$1" ;;
    *) echo "unknown target $1 (request, manifest, pack, meta)" >&2; return 1 ;;
    esac
}

cargo test --release --lib --no-run
status=0
for t in "${targets[@]}"; do
    name=$(test_of "$t")
    start=$(date +%s%N)
    # The protocol loop reports every malformed request on stderr by design:
    # drop those lines, keep everything else (a failure's report included).
    if ! PROPTEST_CASES=$cases cargo test --release --lib -q "$name" -- \
        --exact --nocapture 2> >(grep -av '^gocacher: ' >&2) |
        grep -av -E '^(running [0-9]+ tests?|\.*|)$'; then
        status=1
    fi
    ms=$((($(date +%s%N) - start) / 1000000))
    printf 'fuzz %s: wall %d.%03d s\n' "$t" $((ms / 1000)) $((ms % 1000))
done
exit $status
