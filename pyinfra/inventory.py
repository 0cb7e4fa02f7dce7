"""One host from the environment: the whole stack on a single VPS (groups `web` and `db`).

    PRODSTACK_HOST=203.0.113.10 PRODSTACK_SSH_KEY=~/.ssh/id_ed25519 \
        uv run pyinfra inventory.py deploy.py          # from pyinfra/

PRODSTACK_SSH_USER (default root; any other user deploys through sudo) and
PRODSTACK_SSH_PORT (default 22) are optional. For several hosts, copy
inventories/production.example.py.
"""

import os

_address = os.environ.get("PRODSTACK_HOST")
if not _address:
    raise SystemExit("inventory.py: set PRODSTACK_HOST to the server's address (see docs/vps.md)")

_data = {
    "ssh_user": os.environ.get("PRODSTACK_SSH_USER", "root"),
    "ssh_port": int(os.environ.get("PRODSTACK_SSH_PORT", "22")),
}
if os.environ.get("PRODSTACK_SSH_KEY"):
    _data["ssh_key"] = os.path.expanduser(os.environ["PRODSTACK_SSH_KEY"])
if _data["ssh_user"] != "root":
    _data["_sudo"] = True
if os.environ.get("PRODSTACK_SSH_KNOWN_HOSTS"):
    # Throwaway test hosts get new host keys on every boot.
    _data["ssh_known_hosts_file"] = os.environ["PRODSTACK_SSH_KNOWN_HOSTS"]
    _data["ssh_strict_host_key_checking"] = "off"

web = [(_address, _data)]
db = [(_address, _data)]
