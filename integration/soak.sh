#!/usr/bin/env bash
# The full soak: 30 rounds of 8 go commands and a trim at once on one cache
# dir and one MinIO bucket (the suite runs 2). Prints each round's time,
# peak RSS and what the trim removed. Usage: integration/soak.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export GOCACHER_TOOLS_DIR="${GOCACHER_TOOLS_DIR:-$HOME/.cache/gocacher-tools}"
bash integration/tools/install-minio.sh >/dev/null
GOCACHER_SOAK_ROUNDS="${1:-30}" cargo test --release --test soak -- --nocapture
