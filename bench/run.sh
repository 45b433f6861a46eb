#!/usr/bin/env bash
# Builds gocacher (release) and runs the side-by-side benchmark.
# Arguments go to bench.py, e.g.: bash bench/run.sh --runs 3
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here/.."
cargo build --release
exec python3 "$here/bench.py" "$@"
