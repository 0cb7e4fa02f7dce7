#!/usr/bin/env bash
# Build the API image from app/ without a registry, tagged by content digest.
#
#   scripts/build-image.sh [BASE_IMAGE]
#
# Deps come from app/requirements.txt (exported from uv.lock, hash-pinned), as wheels
# downloaded on this host, so the build needs no network inside Docker. Prints the tag.
set -euo pipefail
cd "$(dirname "$0")/.."
base="${1:-${BASE_IMAGE:-python:3.11-slim-bookworm}}"
repo="${IMAGE_REPOSITORY:-prodstack-api}"

uv export --frozen --no-default-groups --no-emit-project --format requirements.txt \
    --output-file app/requirements.txt >/dev/null
# Wheels for any CPython 3.11.x base. pip evaluates environment markers against this
# host's Python, so they are dropped for the download: a marker such as
# python_full_version < "3.11.3" picks different deps on Debian's 3.11.2 and on the
# official image's latest 3.11, and both must be in the wheelhouse.
unmarked="$(mktemp)"
trap 'rm -f "$unmarked"' EXIT
sed -E 's/ ; [^\\]*\\/ \\/' app/requirements.txt >"$unmarked"
uv run --frozen --no-sync python -m pip download --quiet --no-deps --only-binary=:all: \
    --python-version 3.11 --implementation cp --abi cp311 \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_5_x86_64 \
    --platform manylinux1_x86_64 --platform linux_x86_64 \
    --dest app/wheelhouse -r "$unmarked" 2>&1 | { grep -v "is ignored" || true; } >&2

version="${APP_VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo 0.1.0)}"
docker build --quiet --build-arg BASE_IMAGE="$base" --build-arg OFFLINE=1 \
    --build-arg APP_VERSION="$version" \
    --label org.opencontainers.image.source=prodstack -t "$repo:build" app >&2
# Tag by the image's own content digest (its config id), so identical builds share a tag.
digest="$(docker image inspect -f '{{.Id}}' "$repo:build" | sed 's/^sha256://' | cut -c1-12)"
docker tag "$repo:build" "$repo:$digest"
echo "$repo:$digest"
