"""Split layout: the API and nginx on `web`, PostgreSQL, Redis and backups on `db`.

Copy to inventories/production.py and fill in your addresses. Run from pyinfra/:

    uv run pyinfra inventories/production.py deploy.py

group_data/ is found relative to the working directory (pyinfra/), so it applies here too.
The db host listens on its private address and lets only the web hosts in, over TLS
only: the deploy keeps a private CA in `pki_dir` (default pki/ next to secrets_file, on
this machine; the CA key never goes to a host) and gives the db host its certificate.
More web hosts: add them to `web` and their private addresses to `db_client_cidrs`; the
deploy replaces replicas on one web host at a time. See docs/vps.md, "Several hosts".
"""

_ssh = {"ssh_user": "root", "ssh_key": "~/.ssh/id_ed25519"}

web = [
    ("203.0.113.10", {**_ssh, "private_address": "10.0.0.10"}),
    # ("203.0.113.11", {**_ssh, "private_address": "10.0.0.11"}),
]
db = [
    (
        "203.0.113.20",
        {
            **_ssh,
            "private_address": "10.0.0.20",
            # The web hosts' private addresses: the only clients PostgreSQL/Redis accept.
            "db_client_cidrs": ["10.0.0.10/32"],
        },
    ),
]
