#!/usr/bin/env bash
# Run LocalStack (S3 only) in the foreground on 127.0.0.1:PORT, without docker,
# from the venv made by install.sh. All of its files go under DATADIR, so
# several instances can run side by side. Ready when
#   curl -sf http://127.0.0.1:PORT/_localstack/health
# returns JSON whose services.s3 is "available" or "running" (stdout also
# prints "Ready."). Stop it with SIGKILL: with the hypercorn gateway, SIGTERM
# takes 3-7 s and sometimes never finishes (LocalStack stops the asyncio loop
# from another thread without waking it). Nothing is left outside DATADIR.
set -euo pipefail

if [[ $# -ne 2 ]]; then
  echo "usage: $0 PORT DATADIR" >&2
  exit 2
fi
PORT=$1
DATADIR=$2

TOOLS_DIR="${GOCACHER_TOOLS_DIR:-$HOME/.cache/gocacher-tools}"
VENV="$TOOLS_DIR/localstack-venv"
if [[ ! -x "$VENV/bin/python" ]]; then
  echo "no LocalStack venv at $VENV: run $(dirname "$0")/install.sh first" >&2
  exit 1
fi

mkdir -p "$DATADIR"/{fs,tmp,volume,config}
DATADIR=$(cd "$DATADIR" && pwd)

# FILESYSTEM_ROOT: host-mode state/cache/logs (defaults to inside the venv!).
# TMP: Python's tempfile dir, which LocalStack's TMP_FOLDER derives from. Not
# TMPDIR: LocalStack reads that as a deprecated setting and warns (and TMPDIR
# would take precedence over TMP, hence the unset).
# LOCALSTACK_VOLUME_DIR / CONFIG_DIR: otherwise /tmp/localstack and ~/.localstack.
export FILESYSTEM_ROOT="$DATADIR/fs"
unset TMPDIR
export TMP="$DATADIR/tmp"
export LOCALSTACK_VOLUME_DIR="$DATADIR/volume"
export CONFIG_DIR="$DATADIR/config"

export SERVICES=s3
export GATEWAY_LISTEN="127.0.0.1:$PORT"
# hypercorn instead of the default twisted gateway.
export GATEWAY_SERVER=hypercorn
# No analytics/telemetry calls (there is no internet here anyway).
export DISABLE_EVENTS=1
export PERSISTENCE=0
# Don't start LocalStack's DNS server (it wants port 53).
export DNS_ADDRESS=0
# Don't try to download a TLS certificate at startup.
export SKIP_SSL_CERT_DOWNLOAD=1
# We are not in LocalStack's docker image; skips its container-only checks/paths.
export OVERRIDE_IN_DOCKER=0

# Same as `python -m localstack.runtime.main`, except that S3 object data goes to
# DATADIR/s3: LocalStack hard-codes /tmp/localstack-s3-storage/BUCKET for it
# (no env var), which parallel instances would share (DeleteBucket in one
# rmtree's the other's directory).
exec "$VENV/bin/python" -c '
import runpy, sys
import localstack.services.s3.provider as s3_provider
s3_provider.DEFAULT_S3_TMP_DIR = sys.argv.pop(1)
runpy.run_module("localstack.runtime.main", run_name="__main__", alter_sys=True)
' "$DATADIR/s3"
