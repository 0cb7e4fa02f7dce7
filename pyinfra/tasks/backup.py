"""Backups: pg_dump -Fc daily at 02:00 (30 daily, weekly, monthly) and hourly, optional S3."""

from __future__ import annotations

from pyinfra.api import deploy
from pyinfra.operations import files

from tasks.config import Settings
from tasks.templates import put, template, timers

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
    timers(cfg, UNITS, label="backups")
