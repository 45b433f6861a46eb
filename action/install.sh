#!/usr/bin/env bash
# Step 1 of the gocacher action: install a release binary for this runner,
# checked against the release's SHA256SUMS, or say that the action's own
# source must be built (build.sh) when there is no release to use.
#
# In:  INPUT_VERSION, ACTION_REPOSITORY, ACTION_REF, RUNNER_OS, RUNNER_ARCH,
#      RUNNER_TEMP, RUNNER_TOOL_CACHE, GITHUB_ACTION_PATH, GITHUB_OUTPUT;
#      GOCACHER_RELEASE_URL overrides where releases are downloaded from
#      (default https://github.com/ACTION_REPOSITORY/releases/download).
# Out: path=BINARY, or build=true with build-root.
#
# Nothing here fails the job: when no binary can be had, the later steps
# leave GOCACHEPROG unset and say so, and Go builds without the cache.
#
# The tool cache (kept between jobs on self-hosted runners) holds the
# release archive as downloaded. It is writable by every job the runner
# ran, untrusted ones included, so nothing in it is taken on its word:
# every job downloads SHA256SUMS again, copies the kept archive out, hashes
# the copy against it and extracts the binary into this job's RUNNER_TEMP.
# The release's SHA256SUMS is the record no job can rewrite together with
# the archive, and the binary GOCACHEPROG names lives only in this job.
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

# A source build lives in this job's RUNNER_TEMP and is never reused by
# another job: there is no record of its hash that an untrusted job could
# not rewrite along with it (see SECURITY.md).
want_build() {
  output build true
  output build-root "${RUNNER_TEMP:?}/gocacher-source-$target"
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
base="${GOCACHER_RELEASE_URL:-https://github.com/${ACTION_REPOSITORY}/releases/download}"
tmp="$(mktemp -d "${RUNNER_TEMP:-/tmp}/gocacher-download.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

if ! download "$base/$version/SHA256SUMS" "$tmp/SHA256SUMS"; then
  warn "could not download gocacher $version's SHA256SUMS from $base, so no gocacher binary can be checked; building the action's source instead"
  want_build
fi
want="$(awk -v f="$archive" '$2 == f || $2 == "*" f { print $1 }' "$tmp/SHA256SUMS")"
if [[ -z "$want" ]]; then
  warn "gocacher $version: SHA256SUMS has no entry for $archive; building the action's source instead"
  want_build
fi

kept="$dir/$archive"
if [[ -f "$kept" ]]; then
  # Hash the copy, not the kept file: what is checked is what is unpacked.
  cp "$kept" "$tmp/$archive" 2>/dev/null || rm -f "$tmp/$archive"
  got="$(sha256_of "$tmp/$archive" 2>/dev/null || echo unreadable)"
  if [[ "$got" == "$want" ]]; then
    note "gocacher $version: the archive kept in $dir matches SHA256SUMS (sha256 $got)"
  else
    warn "gocacher $version: the archive kept in $dir does not match its SHA256SUMS entry (got $got, want $want): refusing it, and downloading the release again"
    rm -f "$kept" "$tmp/$archive" 2>/dev/null || true
  fi
fi
if [[ ! -f "$tmp/$archive" ]]; then
  if ! download "$base/$version/$archive" "$tmp/$archive"; then
    warn "could not download gocacher $version ($archive) from $base; building the action's source instead"
    want_build
  fi
  got="$(sha256_of "$tmp/$archive")"
  if [[ "$want" != "$got" ]]; then
    warn "gocacher $version: $archive does not match its SHA256SUMS entry (got $got, want $want); not using it, building the action's source instead"
    want_build
  fi
  note "installed gocacher $version ($target, archive sha256 $got)"
  # Kept for the next job on this runner (which checks it again). mktemp
  # makes a new file (never one another job planted), and the rename puts
  # it in place in one step. A tool cache that cannot take it costs the
  # next job a download, nothing more.
  if ! { mkdir -p "$dir" && new="$(mktemp "$dir/.$archive.XXXXXX")" &&
    cp "$tmp/$archive" "$new" && mv -f "$new" "$kept"; } 2>/dev/null; then
    note "could not keep the archive in $dir; the next job downloads it again"
  fi
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
# The binary of this job, in a directory only this job made.
bin_dir="$(mktemp -d "${RUNNER_TEMP:?}/gocacher-bin.XXXXXX")"
cp "$found" "$bin_dir/$exe"
chmod 755 "$bin_dir/$exe"
# A binary an earlier version of the action kept beside the archive.
rm -f "$dir/$exe" 2>/dev/null || true
output path "$bin_dir/$exe"
