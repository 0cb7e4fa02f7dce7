#!/usr/bin/env bash
# The out-of-the-box demo: boot a local test "VPS" (a Debian 12 systemd host running as a
# Docker container), deploy the whole stack to it over SSH with pyinfra, and print the URL
# where the API answers through nginx. No cloud account and no VPS needed.
#
#   scripts/demo.sh          # boot (or reuse) the host and deploy; safe to re-run
#   scripts/demo-down.sh     # tear it down
#
# Needs root, docker.io and debootstrap (scripts/setup.sh); the first run builds the host
# and base images (~3 min), later runs reuse them. State lives in .prodstack/demo/.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export PATH="$PWD/.prodstack/tools/bin:$PATH"
state="$PWD/.prodstack/demo"
name="${PRODSTACK_DEMO_NAME:-prodstack-demo}"
mkdir -p "$state"

echo "==> Booting the test host ($name)" >&2
address="$(uv run --frozen python - "$name" "$state" <<'PY'
import subprocess, sys
from pathlib import Path
from tests.vps.host import Host, boot, ssh_keypair
name, state = sys.argv[1], Path(sys.argv[2])
key = ssh_keypair(state)
running = subprocess.run(["docker", "inspect", "-f", "{{.State.Running}} {{.NetworkSettings.IPAddress}}", name],
                         capture_output=True, text=True).stdout.split()
print(running[1] if running[:1] == ["true"] else boot(name, key).address)
PY
)"

echo "==> Building the API image (offline, from app/)" >&2
base="$(uv run --frozen python -c 'from tests.support.docker import python_base_image; print(python_base_image())')"
image="$(scripts/build-image.sh "$base")"

uv run --frozen python pyinfra/new_secrets.py "$state/secrets.env" >&2

echo "==> Deploying $image to $address with pyinfra (log: $state/deploy.log)" >&2
if ! (cd pyinfra && PRODSTACK_HOST="$address" PRODSTACK_SSH_KEY="$state/id_ed25519" \
        PRODSTACK_SSH_KNOWN_HOSTS=/dev/null \
        uv run --frozen pyinfra -y inventory.py deploy.py \
        --data image="$image" --data secrets_file="$state/secrets.env") >"$state/deploy.log" 2>&1; then
    tail -n 40 "$state/deploy.log" >&2
    echo "deploy failed; full log: $state/deploy.log" >&2
    exit 1
fi
grep "Grand total" "$state/deploy.log" >&2 || true

health="$(curl -fsSk --max-time 10 "https://$address/health")"
# The token stays in the 0600 secrets file; the commands below read it from there.
token="\$(sed -n 's/^API_TOKEN=//p' $state/secrets.env)"
cat <<MSG

prodstack is up on a local systemd host, behind nginx (self-signed TLS):

  https://$address/           health: $health

  curl -k https://$address/api/v1/alerts -H "Authorization: Bearer $token"
  curl -k https://$address/api/v1/alerts -H "Authorization: Bearer $token" \\
       -H 'Content-Type: application/json' \\
       -d '{"message":"hello","type":"demo","priority":"low","region":"eu"}'
  ssh -i $state/id_ed25519 root@$address      # look around: prodstack-release status

Secrets: $state/secrets.env. Tear down: scripts/demo-down.sh
MSG
echo "https://$address/"
