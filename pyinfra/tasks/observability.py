"""Monitoring: a health-check timer (API /health, pg_isready, redis-cli ping) to the journal."""

from __future__ import annotations

from pyinfra.api import deploy

from tasks.config import Settings
from tasks.pki import CA_ON_HOST
from tasks.templates import template, timers


@deploy("Monitoring")
def observability(cfg: Settings) -> None:
    template(
        name="prodstack-healthcheck",
        src="prodstack-healthcheck.j2.sh",
        dest="/usr/local/sbin/prodstack-healthcheck",
        mode="755",
        cfg=cfg,
        ca_file=CA_ON_HOST,
    )
    template(
        name="Health-check credentials (0600)",
        src="healthcheck.j2.env",
        dest="/etc/prodstack/healthcheck.env",
        mode="600",
        cfg=cfg,
    )
    timers(
        cfg, ("prodstack-healthcheck.service", "prodstack-healthcheck.timer"), label="monitoring"
    )
