"""Backups: pg_dump -Fc daily at 02:00 (30 daily, weekly, monthly) and hourly, optional S3."""

from __future__ import annotations

from pyinfra.api import deploy
from pyinfra.operations import files, systemd

from tasks.config import Settings
from tasks.templates import put, template

UNITS = (
    "prodstack-backup.service",
    "prodstack-backup.timer",
    "prodstack-backup-hourly.service",
    "prodstack-backup-hourly.timer",
)


@deploy("Backups")
def backup(cfg: Settings) -> None:
    files.directory(name="Backup directory", path="/var/backups/prodstack", mode="700")
    put(name="prodstack-backup", src="prodstack-backup", dest="/usr/local/sbin/prodstack-backup")
    put(
        name="prodstack-restore",
        src="prodstack-restore",
        dest="/usr/local/sbin/prodstack-restore",
    )
    template(
        name="Backup settings",
        src="backup.j2.json",
        dest="/etc/prodstack/backup.json",
        mode="600",
        cfg=cfg,
    )
    template(
        name="Off-site storage credentials (0600)",
        src="backup.j2.env",
        dest="/etc/prodstack/backup.env",
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
        for unit in UNITS
    ]
    systemd.daemon_reload(
        name="Reload systemd units (backups)", _if=lambda: any(u.did_change() for u in units)
    )
    for timer in ("prodstack-backup.timer", "prodstack-backup-hourly.timer"):
        systemd.service(name=f"{timer} enabled", service=timer, running=True, enabled=True)
