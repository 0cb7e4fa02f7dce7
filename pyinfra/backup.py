"""Take a backup now: `uv run pyinfra inventory.py backup.py` (the timer runs it at 02:00)."""

from pyinfra import host
from pyinfra.operations import systemd

if "db" in host.groups:
    systemd.service(
        name="Run prodstack-backup.service now (always runs: it is the requested action)",
        service="prodstack-backup.service",
        running=True,
        restarted=True,
    )
