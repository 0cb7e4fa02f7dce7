#!/usr/bin/env bash
# Install what prodstack's commands need on Debian 12 (or Ubuntu 24.04), idempotently:
# the Debian packages, uv, and the Python dependencies pinned in uv.lock.
#
#   scripts/setup.sh           everything: deploys, tests, benchmarks
#   scripts/setup.sh --plan    only what `prodstack plan | diff | cost | choose` need
#                              (the plan job in CI): Python, git and the cloud and vps
#                              dependency groups; no services, Docker or test tools
set -euo pipefail
cd "$(dirname "$0")/.."

MODE="all"
case "${1:-}" in
  "") ;;
  --plan) MODE="plan" ;;
  *) echo "setup: unknown option ${1}; expected --plan or nothing" >&2; exit 2 ;;
esac

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

# postgresql, redis-server, nginx: the real services the tests and benchmark run against.
# docker.io, debootstrap: the image build and the systemd test host (no registry needed).
# wrk: the benchmark's load generator. openssh-client: pyinfra's transport.
# The shellcheck package: actionlint's checks of the workflows' shell steps.
# prometheus, prometheus-alertmanager: promtool and amtool for the alert-rule unit tests.
# ssh-audit, sslscan: the VPS hardening baselines, audited from outside the test host.
# haproxy: the PROXY-protocol load balancer in front of the e2e host.
PACKAGES=(
  python3 python3-venv ca-certificates curl git iproute2 openssh-client openssl
  postgresql redis-server nginx debootstrap wrk shellcheck
  prometheus prometheus-alertmanager ssh-audit sslscan haproxy
)
# A host that already has a Docker engine (GitHub's runners ship docker-ce) keeps it.
command -v dockerd >/dev/null 2>&1 || PACKAGES+=(docker.io)
if [ "$MODE" = "plan" ]; then
  PACKAGES=(python3 python3-venv ca-certificates git)
fi
missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
fi

UV_VERSION="0.13.9"
if ! command -v uv >/dev/null 2>&1; then
  # Debian's Python is externally managed (PEP 668): uv gets a venv of its own.
  echo "setup: installing uv ${UV_VERSION}"
  python3 -m venv .prodstack/tools
  .prodstack/tools/bin/pip install --quiet "uv==${UV_VERSION}"
  export PATH="$PWD/.prodstack/tools/bin:$PATH"
fi

# `uv run prodstack ...` straight after set-up: put uv on the PATH of later shells.
if ! PATH="${PATH#"$PWD/.prodstack/tools/bin:"}" command -v uv >/dev/null 2>&1; then
  bin_dir="/usr/local/bin"
  [ -w "$bin_dir" ] || { bin_dir="$HOME/.local/bin"; mkdir -p "$bin_dir"; }
  ln -sf "$PWD/.prodstack/tools/bin/uv" "$bin_dir/uv"
  echo "setup: linked uv into $bin_dir"
fi

if [ "$MODE" = "plan" ]; then
  echo "setup: Python dependencies for planning from uv.lock (groups cloud and vps)"
  UV_PYTHON_DOWNLOADS=never uv sync --frozen --quiet --no-default-groups --group cloud --group vps
else
  echo "setup: Python dependencies from uv.lock"
  UV_PYTHON_DOWNLOADS=never uv sync --frozen --quiet
fi
