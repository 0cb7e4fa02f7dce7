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
uv run --frozen --no-sync python -m pip download --quiet --only-binary=:all: \
    --python-version 3.11 --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux_2_28_x86_64 --platform linux_x86_64 \
    --dest app/wheelhouse -r app/requirements.txt >&2 || \
  uv run --frozen --no-sync python -m pip download --quiet --dest app/wheelhouse -r app/requirements.txt >&2

version="${APP_VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo 0.1.0)}"
docker build --quiet --build-arg BASE_IMAGE="$base" --build-arg OFFLINE=1 \
    --build-arg APP_VERSION="$version" \
    --label org.opencontainers.image.source=prodstack -t "$repo:build" app >&2
# Tag by the image's own content digest (its config id), so identical builds share a tag.
digest="$(docker image inspect -f '{{.Id}}' "$repo:build" | sed 's/^sha256://' | cut -c1-12)"
docker tag "$repo:build" "$repo:$digest"
echo "$repo:$digest"
