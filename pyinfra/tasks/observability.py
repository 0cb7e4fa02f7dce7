"""Health checks: a one-minute timer (API /health, pg_isready, redis-cli ping, disk) to the
journal; on a web host it also exports the TLS certificate's expiry for Prometheus."""

from __future__ import annotations

from pyinfra.api import deploy

from tasks.config import Settings
from tasks.load_balancer import CERT
from tasks.monitoring import TEXTFILE_DIR
from tasks.pki import CA_ON_HOST
from tasks.templates import template, timers


@deploy("Health checks")
def observability(cfg: Settings) -> None:
    template(
        name="prodstack-healthcheck",
        src="prodstack-healthcheck.j2.sh",
        dest="/usr/local/sbin/prodstack-healthcheck",
        mode="755",
        cfg=cfg,
        ca_file=CA_ON_HOST,
        cert=CERT,
        textfile_dir=TEXTFILE_DIR,
    )
    template(
        name="Health-check credentials (0600)",
        src="healthcheck.j2.env",
        secret=True,
        dest="/etc/prodstack/healthcheck.env",
        mode="600",
        cfg=cfg,
    )
    timers(
        cfg, ("prodstack-healthcheck.service", "prodstack-healthcheck.timer"), label="monitoring"
    )
