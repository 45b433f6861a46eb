#!/usr/bin/env bash
# Step 1 of the gocacher action: install a release binary for this runner,
# checked against the release's SHA256SUMS, or say that the action's own
# source must be built (build.sh) when there is no release to use.
#
# In:  INPUT_VERSION, ACTION_REPOSITORY, ACTION_REF, RUNNER_OS, RUNNER_ARCH,
#      RUNNER_TEMP, RUNNER_TOOL_CACHE, GITHUB_ACTION_PATH, GITHUB_OUTPUT;
#      GOCACHER_RELEASE_URL overrides where releases are downloaded from
#      (default https://github.com/ACTION_REPOSITORY/releases/download).
# Out: path=BINARY, or build=true with build-root and source-hash.
#
# Nothing here fails the job: when no binary can be had, the later steps
# leave GOCACHEPROG unset and say so, and Go builds without the cache.
set -euo pipefail
# shellcheck source=action/lib.sh
source "$GITHUB_ACTION_PATH/action/lib.sh"

target="$(runner_target)" || {
  warn "no gocacher build for $RUNNER_OS/$RUNNER_ARCH; building the action's source"
  target=unknown
}

version="${INPUT_VERSION:-}"
if [[ -z "$version" ]]; then
  if [[ "${ACTION_REF:-}" =~ ^v[0-9]+\.[0-9]+\.[0-9]+ ]]; then
    version="$ACTION_REF"
  else
    version=source
  fi
fi

want_build() {
  local root="${RUNNER_TOOL_CACHE:-$RUNNER_TEMP}/gocacher/source-$target"
  output build true
  output build-root "$root"
  output source-hash "$(source_hash)"
  exit 0
}

if [[ "$version" == source || "$target" == unknown ]]; then
  want_build
fi
if [[ ! "$version" =~ ^v[0-9A-Za-z._+-]+$ ]]; then
  fail "version: \"$version\" is not a release tag such as v0.2.0, nor \"source\""
fi

exe=gocacher
archive="gocacher-$target.tar.gz"
if [[ "$RUNNER_OS" == Windows ]]; then
  exe=gocacher.exe
  archive="gocacher-$target.zip"
fi
dir="${RUNNER_TOOL_CACHE:-$RUNNER_TEMP}/gocacher/$version/$target"
if [[ -x "$dir/$exe" && -f "$dir/.verified" ]]; then
  note "gocacher $version already installed at $dir"
  output path "$dir/$exe"
  exit 0
fi

base="${GOCACHER_RELEASE_URL:-https://github.com/${ACTION_REPOSITORY}/releases/download}"
tmp="$(mktemp -d "${RUNNER_TEMP:-/tmp}/gocacher-download.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
if ! download "$base/$version/SHA256SUMS" "$tmp/SHA256SUMS" ||
  ! download "$base/$version/$archive" "$tmp/$archive"; then
  warn "could not download gocacher $version ($archive) from $base; building the action's source instead"
  want_build
fi
want="$(awk -v f="$archive" '$2 == f || $2 == "*" f { print $1 }' "$tmp/SHA256SUMS")"
got="$(sha256_of "$tmp/$archive")"
if [[ -z "$want" || "$want" != "$got" ]]; then
  warn "gocacher $version: $archive does not match its SHA256SUMS entry (got $got, want ${want:-no entry}); not using it, building the action's source instead"
  want_build
fi
mkdir -p "$tmp/x"
if [[ "$archive" == *.zip ]]; then
  unzip -q "$tmp/$archive" -d "$tmp/x"
else
  tar -xzf "$tmp/$archive" -C "$tmp/x"
fi
found="$(find "$tmp/x" -type f -name "$exe" | head -n 1)"
if [[ -z "$found" ]]; then
  warn "gocacher $version: $archive holds no $exe; building the action's source instead"
  want_build
fi
mkdir -p "$dir"
cp "$found" "$dir/$exe.tmp"
chmod 755 "$dir/$exe.tmp"
mv -f "$dir/$exe.tmp" "$dir/$exe"
echo "$got" >"$dir/.verified"
note "installed gocacher $version ($target, sha256 $got)"
output path "$dir/$exe"
