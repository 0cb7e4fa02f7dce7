#!/usr/bin/env bash
# Tear down the demo host from scripts/demo.sh. --purge also deletes .prodstack/demo/
# (its SSH key and secrets). Cached images are kept so the next demo boots fast.
set -euo pipefail
cd "$(dirname "$0")/.."
name="${PRODSTACK_DEMO_NAME:-prodstack-demo}"
if docker inspect "$name" >/dev/null 2>&1; then
    docker rm -f -v "$name" >/dev/null
    echo "removed $name"
else
    echo "$name is not running"
fi
if [ "${1:-}" = "--purge" ]; then
    rm -rf .prodstack/demo
    echo "deleted .prodstack/demo"
fi
