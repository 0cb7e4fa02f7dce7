#!/usr/bin/env bash
# The test suite: installs what it needs, then runs pytest (extra args pass through).
#
#   scripts/test.sh                 the whole suite (what CI runs)
#   scripts/test.sh --fast          the inner loop: no Docker, no e2e host
#   scripts/test.sh tests/app -x    any pytest arguments, after the defaults below
#
# pytest runs on PRODSTACK_TEST_WORKERS pytest-xdist workers (default 5 on a 2-core
# machine: four of them mostly wait on the e2e hosts' apt and SSH, the three shared hosts
# and the multi-host set, while the fifth keeps the CPU busy with the rest).
# `--dist loadgroup` keeps each file, and the e2e files that share a host, on one worker
# in file order; groups are handed out in the order tests/conftest.py gives them (the e2e
# hosts first), not biggest first. `-n 0` among the arguments runs in this
# process instead.
set -euo pipefail
cd "$(dirname "$0")/.."

fast=()
if [ "${1:-}" = "--fast" ]; then
  shift
  fast=(-m "not docker and not e2e")
fi

# Byte-compile the environment once: the suite starts dozens of fresh interpreters (the
# Pulumi program's recordings, the CLI, pyinfra), each of which would otherwise compile
# pulumi_aws again when PYTHONDONTWRITEBYTECODE is set.
UV_COMPILE_BYTECODE=1 scripts/setup.sh
export PATH="$PWD/.prodstack/tools/bin:$PATH"

set +e
uv run --frozen --no-sync pytest -n "${PRODSTACK_TEST_WORKERS:-5}" --dist loadgroup \
  --no-loadscope-reorder ${fast[@]+"${fast[@]}"} "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "test.sh: pytest collected no tests; that is a failure, not a pass" >&2
  exit 1
fi
exit "$status"
