#!/usr/bin/env bash
# Install the seed project's cache servers, gocached and go-cacher-server
# (github.com/bradfitz/go-tool-cache, pinned), and its go-cacher client (a
# benchmark contender) into $GOCACHER_TOOLS_DIR/bin for the integration tests.
# Reruns are a no-op while the stamp matches. Prints the bin dir on stdout
# (last line); progress goes to stderr.
set -euo pipefail

SEED_VERSION="v0.0.0-20260722201841-0bb331e19f64"

TOOLS_DIR="${GOCACHER_TOOLS_DIR:-$HOME/.cache/gocacher-tools}"
BIN_DIR="$TOOLS_DIR/bin"
STAMP="$BIN_DIR/.seed.version"

if [[ -x "$BIN_DIR/gocached" && -x "$BIN_DIR/go-cacher-server" && -x "$BIN_DIR/go-cacher" \
  && -f "$STAMP" && "$(cat "$STAMP")" == "$SEED_VERSION" ]]; then
  echo "go-tool-cache $SEED_VERSION already installed" >&2
else
  echo "installing go-tool-cache $SEED_VERSION (gocached, go-cacher-server, go-cacher)" >&2
  mkdir -p "$BIN_DIR"
  rm -f "$STAMP"
  for cmd in gocached go-cacher-server go-cacher; do
    GOBIN="$BIN_DIR" go install -trimpath "github.com/bradfitz/go-tool-cache/cmd/$cmd@$SEED_VERSION"
  done
  # Stamp written last, so an interrupted build is retried next time.
  echo "$SEED_VERSION" >"$STAMP"
fi

echo "$BIN_DIR"
