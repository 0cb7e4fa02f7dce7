"""`prodstack restore`: restore a cloud stack's database to a point in time, as config.

It writes the stack's ``restore_to_time`` (and with ``--release``, ``restore_source:
release``) the way ``prodstack rollback`` writes ``image``: through ``pulumi config set``
when the Pulumi CLI is installed, else by a checked in-place edit of ``Pulumi.<stack>.yaml``
(:func:`prodstack.release.set_stack_config`). The next ``pulumi up`` creates the restored
instance and moves the service to it (components/database.py); ``prodstack diff`` shows it
as a database restore first.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from prodstack.errors import UsageError
from prodstack.release import write_stack_config

PROJECT = "prodstack"
EXAMPLES = """examples:
  prodstack restore --stack prod --to 2026-12-07T05:00:00Z   # a new instance as it was then
  prodstack restore --stack prod --to 2026-12-07T05:00:00Z --format json
  prodstack restore --stack prod --release   # after checking: the stack forgets the old one
"""


def _stack_file(root: Path, stack: str) -> Path:
    path = root / f"Pulumi.{stack}.yaml"
    if not path.is_file():
        raise UsageError(f"--stack {stack}: no {path.name} in {root}")
    return path


def _config(path: Path) -> dict[str, Any]:
    try:
        return (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("config") or {}
    except yaml.YAMLError:
        raise UsageError(f"{path.name}: invalid YAML; fix it before changing it") from None


def check_time(when: str, *, retention_days: int, now: datetime) -> None:
    """Refuse a time RDS cannot restore to: not UTC ``YYYY-MM-DDTHH:MM:SSZ``, in the
    future, or older than the automated backups' retention."""
    from components.database import RESTORE_TIME_RE

    if not RESTORE_TIME_RE.fullmatch(when):
        raise UsageError(f"--to {when!r}: a UTC time YYYY-MM-DDTHH:MM:SSZ")
    try:
        at = datetime.strptime(when, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        raise UsageError(f"--to {when!r}: not a real date and time") from None
    if at > now:
        raise UsageError(f"--to {when}: in the future (now {now:%Y-%m-%dT%H:%M:%SZ})")
    if at < now - timedelta(days=retention_days):
        raise UsageError(f"--to {when}: older than the stack's backup_retention_days "
                         f"({retention_days}); RDS keeps point-in-time backups that long")


def cmd_restore(args: argparse.Namespace) -> int:
    if bool(args.to) == bool(args.release):
        raise UsageError("--to TIME or --release: one of the two (restore first, release "
                         "the old instance after checking the restored one)")
    root = args.root.resolve()
    path = _stack_file(root, args.stack)
    config = _config(path)
    if args.release:
        when = str(config.get(f"{PROJECT}:restore_to_time") or "")
        if not when:
            raise UsageError(f"--release: {path.name} has no {PROJECT}:restore_to_time; "
                             "restore first (--to TIME), deploy, check, then release")
        key, value = f"{PROJECT}:restore_source", "release"
    else:
        retention = int(config.get(f"{PROJECT}:backup_retention_days") or 7)
        check_time(args.to, retention_days=retention, now=datetime.now(UTC))
        key, value = f"{PROJECT}:restore_to_time", args.to
    how = write_stack_config(root, args.stack, key, value)
    result = {"stack": args.stack, "key": key, "value": value, "set_by": how,
              "next": f"pulumi up --stack {args.stack}"}
    if args.format == "json":
        sys.stdout.write(json.dumps(result, indent=1, sort_keys=True) + "\n")
        return 0
    if args.release:
        sys.stdout.write(
            f"Released the original database of `{args.stack}` ({how}):\n\n    {key}: {value}"
            f"\n\nThe next `pulumi up --stack {args.stack}` stops managing it; AWS keeps it "
            "(deletion protection stays on). Snapshot and delete it by hand when you no "
            "longer need it.\n")
    else:
        sys.stdout.write(
            f"Restore of `{args.stack}` to {args.to} set ({how}):\n\n    {key}: {value}\n\n"
            f"Review it with `prodstack diff --base HEAD --head <your branch> --stack "
            f"{args.stack}` (it reads \"database restore\"), then `pulumi up --stack "
            f"{args.stack}`: a new instance as the database was at {args.to}, the service "
            "moved to it by a normal deployment, the old instance kept. Writes after that "
            "time are only in the old one. When the restored one is right: `prodstack "
            f"restore --stack {args.stack} --release`.\n")
    return 0


def register(sub: Any, subcommand: Any) -> None:
    """Add ``restore`` to the CLI (``subcommand`` is cli._subcommand)."""
    p = subcommand(sub, "restore", "restore a cloud stack's database to a point in time",
                   "Set the stack's restore_to_time (or, after checking, restore_source: "
                   "release) through `pulumi config set` or a checked edit of "
                   "Pulumi.<stack>.yaml; `pulumi up` then creates the restored instance "
                   "and moves the service to it.", EXAMPLES)
    p.add_argument("--stack", required=True, help="the Pulumi stack (Pulumi.<stack>.yaml)")
    p.add_argument("--to", metavar="TIME",
                   help="UTC time to restore to, YYYY-MM-DDTHH:MM:SSZ, within "
                   "backup_retention_days")
    p.add_argument("--release", action="store_true",
                   help="after a restore: stop managing the original instance (AWS keeps it)")
    p.add_argument("--root", type=Path, default=Path.cwd(),
                   help="the checkout holding the stack file (default: .)")
    p.add_argument("--format", choices=("markdown", "json"), default="markdown")
    p.set_defaults(func=cmd_restore)
