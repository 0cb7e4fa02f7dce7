#!/usr/bin/env bash
# The whole test suite: installs what it needs, then runs pytest (extra args pass through).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export PATH="$PWD/.prodstack/tools/bin:$PATH"

set +e
uv run --frozen --no-sync pytest "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "test.sh: pytest collected no tests; that is a failure, not a pass" >&2
  exit 1
fi
exit "$status"
