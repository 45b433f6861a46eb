#!/usr/bin/env bash
# Step 2 of the gocacher action, when there is no release binary to use:
# build the action's own source with `cargo install --locked`. The cargo
# registry and the built binary are cached by the actions/cache step before
# this one, keyed by a hash of the source, so only the first run of a
# version pays for the build.
#
# In:  BUILD_ROOT, SOURCE_HASH, RUNNER_OS, GITHUB_ACTION_PATH, GITHUB_OUTPUT.
# Out: path=BINARY, or nothing (with a warning) when it cannot be built.
set -euo pipefail
# shellcheck source=action/lib.sh
source "$GITHUB_ACTION_PATH/action/lib.sh"

exe=gocacher
[[ "${RUNNER_OS:-}" == Windows ]] && exe=gocacher.exe
bin="$BUILD_ROOT/bin/$exe"
if [[ -x "$bin" && "$(cat "$BUILD_ROOT/.source-hash" 2>/dev/null || true)" == "$SOURCE_HASH" ]]; then
  note "using the cached build of this source at $bin"
  output path "$bin"
  exit 0
fi
if ! command -v cargo >/dev/null; then
  warn "no release binary to use and no cargo on this runner: Go runs without gocacher in this job (install Rust, or name a released version)"
  exit 0
fi
start=$SECONDS
if cargo install --locked --force --path "$GITHUB_ACTION_PATH" --root "$BUILD_ROOT"; then
  echo "$SOURCE_HASH" >"$BUILD_ROOT/.source-hash"
  note "built gocacher from source in $((SECONDS - start)) s"
  output path "$bin"
else
  warn "building gocacher failed: Go runs without gocacher in this job"
fi
