"""VPS releases from the operator's machine: run the real pyinfra rollback
(pyinfra/rollback.py) against an inventory. Each web host's `prodstack-release` keeps the
release history and decides (see its docstring and docs/releases.md); this only starts it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from prodstack.errors import UsageError

PYINFRA_DIR = Path(__file__).resolve().parents[1] / "pyinfra"


def rollback_command(inventory: Path, to: str | None, host: str | None) -> list[str]:
    if not inventory.is_file():
        raise UsageError(f"-i {inventory}: no such inventory file")
    command = [sys.executable, "-m", "pyinfra", "-y", str(inventory.resolve()), "rollback.py"]
    if to:
        command += ["--data", f"rollback_to={to}"]
    if host:
        command += ["--limit", host]
    return command


def rollback(inventory: Path, to: str | None, host: str | None) -> int:
    """Roll each web host of `inventory` (or only `host`) back: to the release before the
    last deploy, or to the retained release `to`. pyinfra's progress goes to stderr; the
    exit code is pyinfra's (0: every host rolled back or was there already)."""
    command = rollback_command(inventory, to, host)
    print(f"prodstack: pyinfra {inventory} rollback.py"
          + (f" --data rollback_to={to}" if to else "") + (f" --limit {host}" if host else ""),
          file=sys.stderr)  # fmt: skip
    # cwd: pyinfra puts it on sys.path, which is how rollback.py finds tasks/. Its output
    # is copied line by line, so it streams wherever this process's stderr goes.
    with subprocess.Popen(command, cwd=PYINFRA_DIR, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True) as proc:  # fmt: skip
        for line in proc.stdout:
            sys.stderr.write(line)
            sys.stderr.flush()
    return proc.returncode
