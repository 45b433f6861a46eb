#!/usr/bin/env bash
# Install a pinned MinIO client (mc) into $GOCACHER_TOOLS_DIR/bin for the
# integration tests, which use it to create MinIO users with limited policies.
# Like install-minio.sh: only the Go module proxy is reachable, so we build from
# source with `go install` at a module pseudo-version. Reruns are a no-op while
# the stamp matches. Prints the binary path on stdout (last line); progress goes
# to stderr.
set -euo pipefail

MC_VERSION="v0.0.0-20250313080218-cf909e1063a9"

TOOLS_DIR="${GOCACHER_TOOLS_DIR:-$HOME/.cache/gocacher-tools}"
BIN_DIR="$TOOLS_DIR/bin"
BIN="$BIN_DIR/mc"
STAMP="$BIN_DIR/.mc.version"

if [[ -x "$BIN" && -f "$STAMP" && "$(cat "$STAMP")" == "$MC_VERSION" ]]; then
  echo "mc $MC_VERSION already installed" >&2
else
  echo "installing mc $MC_VERSION (first build takes a few minutes)" >&2
  mkdir -p "$BIN_DIR"
  rm -f "$STAMP"
  # -trimpath keeps the binary independent of local paths.
  GOBIN="$BIN_DIR" go install -trimpath "github.com/minio/mc@$MC_VERSION"
  # Stamp written last, so an interrupted build is retried next time.
  echo "$MC_VERSION" >"$STAMP"
fi

echo "$BIN"
