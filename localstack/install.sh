#!/usr/bin/env bash
# Create (or reuse) a venv with LocalStack's S3 emulator for the integration
# tests at $GOCACHER_TOOLS_DIR/localstack-venv. No docker here, so LocalStack
# runs straight from the localstack-core package (see start.sh).
# Prints the venv path on stdout (last line); progress goes to stderr.
set -euo pipefail

# The tested set. The upper bounds keep later cbor2/pyOpenSSL releases away
# from this pinned LocalStack; service_identity lets its TLS stack verify
# hostnames without warning about the missing module.
PACKAGES=('localstack-core[runtime]==4.13.1' 'cbor2<6' 'pyOpenSSL<26.2' service_identity)

TOOLS_DIR="${GOCACHER_TOOLS_DIR:-$HOME/.cache/gocacher-tools}"
VENV="$TOOLS_DIR/localstack-venv"
STAMP="$VENV/.gocacher-stamp"
PYTHON="${PYTHON:-python3}"
# The stamp records the package list and the interpreter, so changing either rebuilds.
WANT="$("$PYTHON" -c 'import sys; print(sys.version.split()[0])') ${PACKAGES[*]}"

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" ]]; then
  echo "localstack venv up to date" >&2
else
  echo "creating localstack venv at $VENV" >&2
  rm -rf "$VENV"
  mkdir -p "$TOOLS_DIR"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "${PACKAGES[@]}" >&2
  # Stamp written last, so a failed install is redone next time.
  echo "$WANT" >"$STAMP"
fi

echo "$VENV"
