"""AIDE, the file-integrity check: Debian's daily timer compares the host's files with a
database of their checksums and attributes, and logs what changed.

The first database is built once, in the background at idle priority
(prodstack-aide-init.service), so no deploy waits for it. Paths whose contents change in
normal service (Docker's images and containers, PostgreSQL's and Redis's data, the
backups, the metrics, the release state) are left to the services that own them.
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import files, server, systemd

from tasks.config import Settings
from tasks.facts import FirstBuildState
from tasks.templates import template, unit_file

# Installed with the base packages, in their one apt transaction (tasks/base.py).
# aide-common: the configuration, aideinit and the daily timer (aide only recommends it).
PACKAGES = ["aide", "aide-common"]
DATABASE = "/var/lib/aide/aide.db"
INIT_UNIT = "prodstack-aide-init.service"
# One strong hash, where Debian's default computes every one aide knows: the build takes a
# fraction of the time and proves no less.
CHECKSUMS = "sha512"
# Data that changes in normal service, under the services that own it.
EXCLUDED = (
    "/var/lib/docker",
    "/var/lib/containerd",
    "/var/lib/postgresql",
    "/var/lib/redis",
    "/var/lib/pgbackrest",
    "/var/spool/pgbackrest",
    "/var/lib/prometheus",
    "/var/lib/grafana",
    "/var/lib/prodstack",
    "/var/cache",
)


@deploy("AIDE file integrity")
def aide(cfg: Settings) -> None:
    files.line(
        name=f"AIDE checksums: {CHECKSUMS}",
        path="/etc/aide/aide.conf",
        line=r"^Checksums\s*=",
        replace=f"Checksums = {CHECKSUMS}",
    )
    template(
        name="AIDE leaves the services' data to the services",
        # aide includes only names of letters, digits, _ and - from aide.conf.d.
        src="aide-prodstack.j2.conf",
        dest="/etc/aide/aide.conf.d/70_prodstack",
        excluded=EXCLUDED,
    )
    unit_file(
        name="AIDE's first database, built once in the background",
        src="prodstack-aide-init.j2.service",
        dest=f"/etc/systemd/system/{INIT_UNIT}",
        label="aide",
        database=DATABASE,
    )
    # Not while an earlier deploy's build still runs: on a loaded host it outlasts a deploy,
    # and a second deploy would report a change it did not make.
    if host.get_fact(FirstBuildState, path=DATABASE, unit=INIT_UNIT) not in ("present", "building"):
        server.shell(
            name="Build AIDE's first database (in the background, idle priority)",
            commands=[f"systemctl start --no-block {INIT_UNIT}"],
        )
    systemd.service(name="AIDE's daily check (dailyaidecheck.timer)",
                    service="dailyaidecheck.timer", running=True, enabled=True)  # fmt: skip
