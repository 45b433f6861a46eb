#!/usr/bin/env bash
# Install a pinned MinIO server binary into $GOCACHER_TOOLS_DIR/bin for the
# integration tests. Only the Go module proxy is reachable, so we build from
# source with `go install`; the proxy refuses MinIO's RELEASE.* tags, so the pin
# is a module pseudo-version. Reruns are a no-op while the stamp matches.
# Prints the binary path on stdout (last line); progress goes to stderr.
set -euo pipefail

# Final commit (2026-02-12) of github.com/minio/minio, which is now archived and
# unmaintained, so this pin will not move. `go install` of it works with Go 1.26.
MINIO_VERSION="v0.0.0-20260212201848-7aac2a2c5b7c"

TOOLS_DIR="${GOCACHER_TOOLS_DIR:-$HOME/.cache/gocacher-tools}"
BIN_DIR="$TOOLS_DIR/bin"
BIN="$BIN_DIR/minio"
STAMP="$BIN_DIR/.minio.version"

if [[ -x "$BIN" && -f "$STAMP" && "$(cat "$STAMP")" == "$MINIO_VERSION" ]]; then
  echo "minio $MINIO_VERSION already installed" >&2
else
  echo "installing minio $MINIO_VERSION (first build takes a few minutes)" >&2
  mkdir -p "$BIN_DIR"
  rm -f "$STAMP"
  # -trimpath keeps the binary independent of local paths.
  GOBIN="$BIN_DIR" go install -trimpath "github.com/minio/minio@$MINIO_VERSION"
  # Stamp written last, so an interrupted build is retried next time.
  echo "$MINIO_VERSION" >"$STAMP"
fi

echo "$BIN"
