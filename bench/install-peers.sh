#!/usr/bin/env bash
# Installs the other GOCACHEPROG helpers that bench/compare.py runs against
# gocacher, into $GOCACHER_TOOLS_DIR/bin (default ~/.cache/gocacher-tools/bin),
# with `go install` through the Go module proxy. Reruns are a no-op while the
# version stamp matches. Prints one "name path" line per installed tool.
#
#   seed: bradfitz/go-tool-cache at a pinned pseudo-version:
#         go-cacher (the GOCACHEPROG client) and go-cacher-server (its HTTP server)
#
# tailscale/go-cache-plugin is not installed: the module proxy on this machine
# answers 403 "not available" for every version of it.
set -euo pipefail

SEED_MODULE="github.com/bradfitz/go-tool-cache"
SEED_VERSION="v0.0.0-20260722201841-0bb331e19f64"

TOOLS_DIR="${GOCACHER_TOOLS_DIR:-$HOME/.cache/gocacher-tools}"
BIN_DIR="$TOOLS_DIR/bin"
STAMP="$BIN_DIR/.go-tool-cache.version"

if [[ -x "$BIN_DIR/go-cacher" && -x "$BIN_DIR/go-cacher-server" && -f "$STAMP" \
      && "$(cat "$STAMP")" == "$SEED_VERSION" ]]; then
  echo "go-tool-cache $SEED_VERSION already installed" >&2
else
  echo "installing $SEED_MODULE@$SEED_VERSION (go-cacher, go-cacher-server)" >&2
  mkdir -p "$BIN_DIR"
  rm -f "$STAMP"
  # GOFLAGS is cleared so a user's flags cannot change the build; -trimpath
  # keeps local paths out of the binaries.
  GOFLAGS= GOTOOLCHAIN=local GOBIN="$BIN_DIR" go install -trimpath \
    "$SEED_MODULE/cmd/go-cacher@$SEED_VERSION" \
    "$SEED_MODULE/cmd/go-cacher-server@$SEED_VERSION"
  echo "$SEED_VERSION" >"$STAMP"   # last, so an interrupted install is retried
fi
echo "go-cacher $BIN_DIR/go-cacher"
echo "go-cacher-server $BIN_DIR/go-cacher-server"
