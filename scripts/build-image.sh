#!/usr/bin/env bash
# Build the API image from app/ without a registry, tagged by content digest.
#
#   scripts/build-image.sh [BASE_IMAGE]
#
# Deps come from app/requirements.txt (exported from uv.lock, hash-pinned), as wheels
# downloaded on this host, so the build needs no network inside Docker. Prints the tag.
#
# Also writes the CycloneDX SBOM of the image's Python packages to
# .prodstack/sbom/<tag>.cdx.json and labels the image with its digest, the source and
# commit, and the build date (docs/supply-chain.md).
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

# The SBOM is made from the requirements alone, reproducibly (no timestamp or serial
# number), so the same lock gives the same digest here and in components/registry.py,
# which runs the same command for the cloud image.
sbom_tmp="$(mktemp)"
trap 'rm -f "$unmarked" "$sbom_tmp"' EXIT
env -u SOURCE_DATE_EPOCH uv run --frozen --no-sync python -m cyclonedx_py requirements \
    --output-reproducible --of JSON --sv 1.6 app/requirements.txt >"$sbom_tmp"
sbom_digest="sha256:$(sha256sum "$sbom_tmp" | cut -d' ' -f1)"

version="${APP_VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo 0.1.0)}"
revision="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
# The remote without any user or token in it; a checkout without one is named plainly.
source_url="$(git remote get-url origin 2>/dev/null | sed -E 's#^(https?://)[^/@]*@#\1#' \
    || true)"
build=(docker build --quiet --build-arg BASE_IMAGE="$base" --build-arg OFFLINE=1
    --build-arg APP_VERSION="$version" --build-arg SBOM_DIGEST="$sbom_digest"
    --label org.opencontainers.image.source="${source_url:-prodstack}"
    --label org.opencontainers.image.revision="$revision")
# Each build reports its own image id through --iidfile rather than a shared tag, so
# concurrent builds on one daemon never read each other's result.
iid="$(mktemp)"
trap 'rm -f "$unmarked" "$sbom_tmp" "$iid"' EXIT
"${build[@]}" --iidfile "$iid" app >/dev/null
# Tag by the image's own content digest (its config id), so identical builds share a tag.
# That build has no date in it; the one tagged below adds the created label on top (its
# layers all come from the cache), so rebuilding an unchanged tree keeps the same tag.
digest="$(sed 's/^sha256://' "$iid" | cut -c1-12)"
created="$(date -u ${SOURCE_DATE_EPOCH:+-d "@$SOURCE_DATE_EPOCH"} +%Y-%m-%dT%H:%M:%SZ)"
"${build[@]}" --label org.opencontainers.image.created="$created" --iidfile "$iid" app >/dev/null
docker tag "$(cat "$iid")" "$repo:$digest"

mkdir -p .prodstack/sbom
cp "$sbom_tmp" ".prodstack/sbom/$digest.cdx.json"
echo "build-image.sh: SBOM .prodstack/sbom/$digest.cdx.json ($sbom_digest)" >&2
echo "$repo:$digest"
