"""Health checks: a one-minute timer (API /health, pg_isready, redis-cli ping, disk) to the
journal; on a web host it also exports the TLS certificate's expiry for Prometheus."""

from __future__ import annotations

from pyinfra.api import deploy
from pyinfra.operations import server

from tasks.config import Settings
from tasks.nginx import CERT
from tasks.prometheus import EXPORTER_CA, HEALTH_USER, TEXTFILE_DIR
from tasks.templates import template, timers


@deploy("Health checks")
def observability(cfg: Settings) -> None:
    user = template(
        name=f"System user {HEALTH_USER} (systemd-sysusers)",
        src="sysusers-prodstack.j2.conf",
        dest="/etc/sysusers.d/prodstack.conf",
        health_user=HEALTH_USER,
    )
    server.shell(
        name=f"Create the system user {HEALTH_USER}",
        commands=["systemd-sysusers /etc/sysusers.d/prodstack.conf"],
        _if=user.did_change,
    )
    template(
        name="prodstack-healthcheck",
        src="prodstack-healthcheck.j2.sh",
        dest="/usr/local/sbin/prodstack-healthcheck",
        mode="755",
        cfg=cfg,
        # The private CA's public copy (tasks/prometheus.py): the sandboxed user can read it.
        ca_file=EXPORTER_CA,
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
        cfg,
        ("prodstack-healthcheck.service", "prodstack-healthcheck.timer"),
        label="monitoring",
        health_user=HEALTH_USER,
        textfile_dir=TEXTFILE_DIR,
    )
