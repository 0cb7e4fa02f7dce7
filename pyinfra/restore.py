"""Restore the database: `uv run pyinfra inventory.py restore.py --data restore_from=latest`.

restore_from: `latest` (newest local dump), a path on the db host, `s3:latest`, or
`s3:<kind>/<file>.dump`. See docs/vps.md, "Backup and restore".
"""

import shlex

from pyinfra import host
from pyinfra.operations import server

source = host.data.get("restore_from") or "latest"
if "db" in host.groups:
    server.shell(
        name=f"Restore the database from {source} (always runs: it is the requested action)",
        commands=[f"/usr/local/sbin/prodstack-restore {shlex.quote(source)}"],
    )
