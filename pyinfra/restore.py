"""Restore the database to a point in time: stop the API replicas, restore with pgBackRest,
migrate and bring the replicas back. See docs/vps.md, "Point-in-time restore".

    uv run pyinfra inventory.py restore.py --data restore_to=2026-12-01T10:15:00Z --data confirm=yes

restore_to: `latest` (all archived WAL), an ISO 8601 time with its zone, or a backup
label (`pgbackrest info` lists them). restore_repo=2 takes everything from the off-site
repository (as after losing the host). Without confirm=yes nothing runs: a restore
replaces the live data.
"""

import re
import shlex
import sys
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pyinfra import host  # noqa: E402
from pyinfra.operations import server  # noqa: E402

from tasks.audit import AUDIT, operator, refuse_if_locked  # noqa: E402
from tasks.config import fail  # noqa: E402

LABEL = re.compile(r"^\d{8}-\d{6}F(_\d{8}-\d{6}[DI])?$")


def target() -> str:
    value = str(host.data.get("restore_to") or "")
    if value == "latest" or LABEL.match(value):
        return value
    try:
        if datetime.fromisoformat(value).tzinfo is not None:
            return value
    except ValueError:
        pass
    raise fail(
        "restore_to",
        value or None,
        "`latest`, a backup label such as 20261201-020003F, or an ISO 8601 time with its "
        "zone such as 2026-12-01T10:15:00Z",
    )


refuse_if_locked()
restore_to = target()
repo = str(host.data.get("restore_repo") or "")
if repo not in ("", "1", "2"):
    raise fail("restore_repo", repo, "1 (this host's repository) or 2 (off-site)")
if host.data.get("confirm") != "yes":
    raise fail(
        "confirm",
        host.data.get("confirm"),
        f"yes (--data confirm=yes): restoring to {restore_to} replaces the live database",
    )

# pyinfra runs each operation on every host before the next one: on two hosts the web
# host's replicas stop before the db host restores, and start after it.
RELEASE = "/usr/local/sbin/prodstack-release"
if "web" in host.groups:
    # A host whose deploy never finished has no release script: say so before anything
    # stops, rather than fail halfway.
    missing = f"echo 'no {RELEASE}: run the deploy on this host first' >&2; exit 1"
    server.shell(
        name="Stop the API replicas (nothing writes during the restore)",
        commands=[f"test -x {RELEASE} || {{ {missing}; }}", f"{RELEASE} stop"],
        _env={"PRODSTACK_DEPLOY_BY": operator()},
    )
if "db" in host.groups:
    args = shlex.quote(restore_to) + (f" --repo {repo}" if repo else "")
    server.shell(
        name=f"Restore the database to {restore_to} (pgBackRest)",
        commands=[
            shlex.join([AUDIT, "record", "--by", operator(), "restore", f"to={restore_to}",
                        f"repo={repo or 1}"]),  # fmt: skip
            f"/usr/local/sbin/prodstack-restore {args}",
        ],
    )
if "web" in host.groups:
    server.shell(
        name="Migrate, then start the API replicas (health-gated)",
        commands=[f"{RELEASE} start"],
        _env={"PRODSTACK_DEPLOY_BY": operator()},
    )
