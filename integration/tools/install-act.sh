#!/usr/bin/env bash
# Install nektos/act, pinned, into $GOCACHER_TOOLS_DIR/bin. `go install`
# of act trips over its replace directives, so the module is downloaded
# through the module proxy and built inside its module directory.
# Reruns are a no-op while the stamp matches. Prints the binary's path on
# stdout (last line); progress goes to stderr.
set -euo pipefail

ACT_VERSION="v0.2.89"

TOOLS_DIR="${GOCACHER_TOOLS_DIR:-$HOME/.cache/gocacher-tools}"
BIN_DIR="$TOOLS_DIR/bin"
mkdir -p "$BIN_DIR"

stamp="$BIN_DIR/.act.version"
if [[ -x "$BIN_DIR/act" && -f "$stamp" && "$(cat "$stamp")" == "$ACT_VERSION" ]]; then
  echo "act $ACT_VERSION already installed" >&2
else
  echo "installing act $ACT_VERSION" >&2
  rm -f "$stamp"
  dir="$(GOFLAGS=-mod=mod go mod download -json "github.com/nektos/act@$ACT_VERSION" |
    sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  [[ -n "$dir" && -d "$dir" ]] || { echo "install-act: go mod download gave no module dir" >&2; exit 1; }
  (cd "$dir" && GOFLAGS=-mod=mod go build -trimpath -o "$BIN_DIR/act.tmp" .)
  mv "$BIN_DIR/act.tmp" "$BIN_DIR/act"
  echo "$ACT_VERSION" >"$stamp"
fi
echo "$BIN_DIR/act"
