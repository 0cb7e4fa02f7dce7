"""Take a backup now: `uv run pyinfra inventory.py backup.py [--data backup_type=full]`.

backup_type: diff (default; a full if none exists yet) or full. The timers take a full
weekly and a differential on the other days.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pyinfra import host  # noqa: E402
from pyinfra.operations import server  # noqa: E402

from tasks.config import fail  # noqa: E402

kind = host.data.get("backup_type") or "diff"
if kind not in ("full", "diff"):
    raise fail("backup_type", kind, "full | diff")
if "db" in host.groups:
    server.shell(
        name=f"{kind} backup now (always runs: it is the requested action)",
        commands=[f"systemctl start prodstack-backup-{kind}.service"],
    )
