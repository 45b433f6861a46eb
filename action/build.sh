#!/usr/bin/env bash
# Step 2 of the gocacher action, when there is no release binary to use:
# build the action's own source with `cargo install --locked` into this
# job's RUNNER_TEMP. The build is not cached between jobs: whatever a cache
# holds, an untrusted job could have put there (see SECURITY.md).
#
# In:  BUILD_ROOT, RUNNER_OS, GITHUB_ACTION_PATH, GITHUB_OUTPUT.
# Out: path=BINARY, or nothing (with a warning) when it cannot be built.
set -euo pipefail
# shellcheck source=action/lib.sh
source "$GITHUB_ACTION_PATH/action/lib.sh"

exe=gocacher
[[ "${RUNNER_OS:-}" == Windows ]] && exe=gocacher.exe
if ! command -v cargo >/dev/null; then
  warn "no release binary to use and no cargo on this runner: Go runs without gocacher in this job (install Rust, or name a released version)"
  exit 0
fi
rm -rf "$BUILD_ROOT"
start=$SECONDS
if cargo install --locked --force --path "$GITHUB_ACTION_PATH" --root "$BUILD_ROOT"; then
  note "built gocacher from source in $((SECONDS - start)) s"
  output path "$BUILD_ROOT/bin/$exe"
else
  warn "building gocacher failed: Go runs without gocacher in this job"
fi
