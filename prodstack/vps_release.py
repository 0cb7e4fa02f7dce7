"""VPS releases from the operator's machine: run the real pyinfra rollback
(pyinfra/rollback.py) against an inventory. Each web host's `prodstack-release` keeps the
release history and decides (see its docstring and docs/releases.md); this only starts it.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from typing import Any

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


ROLLBACK_EXAMPLES = """examples:
  prodstack rollback --profile vps -i pyinfra/inventory.py            # undo the last deploy
  prodstack rollback --profile vps -i pyinfra/inventory.py --to 1a2b3c4d5e6f
  prodstack rollback --profile vps -i inventory.py --to v1.4.2 --host web-1
"""


def cmd_rollback(args: argparse.Namespace) -> int:
    if args.inventory is None:
        raise UsageError("rollback --profile vps needs -i INVENTORY")
    return rollback(args.inventory, args.to, args.host)


def register(sub: Any, subcommand: Any) -> None:
    """A minimal `prodstack rollback` (VPS only), for prodstack/cli.py's build_parser."""
    parser = subcommand(sub, "rollback", "roll the API back to a kept release",
                        "Run pyinfra/rollback.py against INVENTORY: each web host goes back "
                        "to the release before its last deploy, or to the kept release "
                        "--to VERSION (docs/releases.md). pyinfra's progress goes to "
                        "stderr; exit 1 when a host refused or failed.", ROLLBACK_EXAMPLES)
    parser.add_argument("--profile", choices=("vps",), required=True)
    parser.add_argument("-i", "--inventory", type=Path, metavar="INVENTORY",
                        help="the pyinfra inventory (e.g. pyinfra/inventory.py)")
    parser.add_argument("--to", metavar="VERSION", help="a version, image or digest the "
                        "hosts keep (default: the release before the last deploy)")
    parser.add_argument("--host", metavar="HOST", help="only this host of the inventory")
    parser.set_defaults(func=cmd_rollback)
