#!/usr/bin/env bash
# Replace app/certs/rds-global-bundle.pem with AWS's current global RDS CA bundle.
#
#   scripts/update-rds-ca-bundle.sh [URL]
#
# The download is checked by stacks/rds_ca.py (Amazon RDS CAs only, each chaining inside
# the bundle, none expired, a root of the instance's CA for every region the stack
# accepts) before it replaces the committed file; a failed check leaves that file as it
# was. Commit the result: the API image, and so its tag, changes with it.
set -euo pipefail
cd "$(dirname "$0")/.."
url="${1:-https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem}"
target=app/certs/rds-global-bundle.pem
download="$(mktemp "$target.XXXXXX")"
trap 'rm -f "$download"' EXIT

echo "downloading $url" >&2
curl --fail --silent --show-error --location --proto '=https' --tlsv1.2 \
    --max-time 60 --output "$download" "$url"
uv run --frozen python -m stacks.rds_ca "$download"
if cmp -s "$download" "$target"; then
    echo "$target is already current" >&2
    exit 0
fi
chmod 0644 "$download"
mv "$download" "$target"
trap - EXIT
echo "updated $target: review and commit it (git diff --stat $target)" >&2
