"""Monitoring: a health-check timer (API /health, pg_isready, redis-cli ping) to the journal."""

from __future__ import annotations

from pyinfra.api import deploy
from pyinfra.operations import systemd

from tasks.config import Settings
from tasks.templates import template


@deploy("Monitoring")
def observability(cfg: Settings) -> None:
    template(
        name="prodstack-healthcheck",
        src="prodstack-healthcheck.j2.sh",
        dest="/usr/local/sbin/prodstack-healthcheck",
        mode="755",
        cfg=cfg,
    )
    template(
        name="Health-check credentials (0600)",
        src="healthcheck.j2.env",
        dest="/etc/prodstack/healthcheck.env",
        mode="600",
        cfg=cfg,
    )
    units = [
        template(
            name=f"Unit {unit}",
            src=unit.replace(".", ".j2.", 1),
            dest=f"/etc/systemd/system/{unit}",
            cfg=cfg,
        )
        for unit in ("prodstack-healthcheck.service", "prodstack-healthcheck.timer")
    ]
    systemd.daemon_reload(
        name="Reload systemd units (monitoring)", _if=lambda: any(u.did_change() for u in units)
    )
    systemd.service(
        name="Health-check timer enabled",
        service="prodstack-healthcheck.timer",
        running=True,
        enabled=True,
    )
