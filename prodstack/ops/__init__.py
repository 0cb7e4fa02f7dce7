"""The operator verbs: `prodstack status | logs | exec | lock | audit`, for both profiles.

VPS: `--profile vps -i INVENTORY`, the inventory file the deploy uses (ops/ssh.py, ops/vps.py).
Cloud: `--stack STACK`, the names from `pulumi stack output --json`, `--outputs FILE` or the
plan (ops/cloud.py). Exit codes as the rest of the CLI: 0 ok; 1 the target refused or a
command on it failed (exec: the command's own exit code); 2 bad usage or a target that
does not exist; 3 an internal error.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path
from typing import Any

from prodstack.errors import UsageError

STATUS_EXAMPLES = """examples:
  prodstack status --profile vps -i pyinfra/inventory.py    # every host: release, replicas, db
  prodstack status --profile vps -i inventories/prod.py --format json
  prodstack status --stack prod                            # the ECS service, targets, alarms
  prodstack status --stack prod --outputs outputs.json     # names from a saved stack output
"""
LOGS_EXAMPLES = """examples:
  prodstack logs --profile vps -i pyinfra/inventory.py --since 10m
  prodstack logs --profile vps -i pyinfra/inventory.py -f --grep ' 500'
  prodstack logs --profile vps -i pyinfra/inventory.py --request-id 4f1c...   # one request
  prodstack logs --profile vps -i pyinfra/inventory.py --service postgres --since 1h
  prodstack logs --stack prod --since 30m --grep error
"""
EXEC_EXAMPLES = """examples:
  prodstack exec --profile vps -i pyinfra/inventory.py -- python -m app migrate
  prodstack exec --profile vps -i pyinfra/inventory.py -i -- python     # a console (note: -i twice)
  prodstack exec --profile vps -i inv.py --host 203.0.113.11 -- python -c 'print(6*7)'
  prodstack exec --stack prod -- migrate      # an ECS task: python -m app migrate
"""
LOCK_EXAMPLES = """examples:
  prodstack lock acquire -m "db work: reindexing alerts" --profile vps -i pyinfra/inventory.py
  prodstack lock status --profile vps -i pyinfra/inventory.py
  prodstack lock release --profile vps -i pyinfra/inventory.py
  prodstack lock release --force --profile vps -i pyinfra/inventory.py  # someone else's
  prodstack lock status --stack prod      # says what locks a cloud deploy: Pulumi's own lock
"""
AUDIT_EXAMPLES = """examples:
  prodstack audit --profile vps -i pyinfra/inventory.py
  prodstack audit --profile vps -i pyinfra/inventory.py --limit 20 --format json
"""


def _target_args(parser: argparse.ArgumentParser, *, host: bool = False) -> None:
    parser.add_argument("--profile", choices=("cloud", "vps"),
                        help="vps (with -i) or cloud (the default with --stack)")  # fmt: skip
    if host:
        # exec: `-i INVENTORY` names the inventory; a second, bare `-i` asks for a terminal.
        parser.add_argument("-i", "--inventory", action="append", nargs="?", const=True,
                            metavar="INVENTORY", help="vps: the pyinfra inventory file the "
                            "deploy uses; a bare -i: interactive (a terminal)")  # fmt: skip
    else:
        parser.add_argument("-i", "--inventory", type=Path, metavar="INVENTORY",
                            help="vps: the pyinfra inventory file the deploy uses")  # fmt: skip
    parser.add_argument("--stack", help="cloud: the stack (Pulumi.STACK.yaml)")
    parser.add_argument("--outputs", type=Path, metavar="FILE",
                        help="cloud: `pulumi stack output --json` saved to a file")  # fmt: skip
    parser.add_argument("--region", help="cloud: AWS region (default: the stack's aws:region)")
    if host:
        parser.add_argument("--host", help="vps: only this inventory host")
    parser.add_argument("--format", choices=("markdown", "json"), default="markdown")


def _profile(args: argparse.Namespace) -> str:
    profile = args.profile or ("cloud" if args.stack else "vps" if args.inventory else None)
    if profile is None:
        raise UsageError("give --profile vps -i INVENTORY, or --stack STACK (cloud)")
    if profile == "vps":
        if args.stack or args.outputs:
            raise UsageError("--stack/--outputs are for the cloud profile; vps takes -i INVENTORY")
        if not args.inventory:
            raise UsageError("--profile vps needs -i INVENTORY (the deploy's pyinfra inventory)")
    else:
        if args.inventory or getattr(args, "host", None):
            raise UsageError("-i/--host are for --profile vps; the cloud profile takes --stack")
        if not args.stack:
            raise UsageError("--profile cloud needs --stack STACK")
    return profile


def _handled(func):
    """A failure on the target is exit 1 with one line; bad usage stays exit 2."""

    @functools.wraps(func)
    def run(args: argparse.Namespace) -> int:
        from prodstack.ops.ssh import HostError

        try:
            return func(args)
        except HostError as error:
            print(f"prodstack: {error}", file=sys.stderr)
            return 1

    return run


def _remotes(args: argparse.Namespace):
    from prodstack.ops.ssh import connect

    return connect(args.inventory, only=getattr(args, "host", None))


def _cloud(args: argparse.Namespace):
    from prodstack.ops.cloud import Cloud

    return Cloud.for_stack(args.stack, outputs_file=args.outputs, region=args.region)


def _write(args: argparse.Namespace, result: Any, markdown: str) -> None:
    if args.format == "json":
        sys.stdout.write(json.dumps(result, indent=1, sort_keys=True, default=str) + "\n")
    else:
        sys.stdout.write(markdown)


@_handled
def cmd_status(args: argparse.Namespace) -> int:
    if _profile(args) == "vps":
        from prodstack.ops import vps

        result = vps.status(_remotes(args))
        _write(args, result, vps.render_status(result))
        return 0
    from prodstack.ops import cloud

    result = _cloud(args).status()
    _write(args, result, cloud.render_status(result))
    return 0


@_handled
def cmd_logs(args: argparse.Namespace) -> int:
    options = {"since": args.since, "follow": args.follow, "grep": args.grep,
               "request_id": args.request_id, "fmt": args.format}  # fmt: skip
    if _profile(args) == "vps":
        from prodstack.ops import vps

        return vps.logs(_remotes(args), service=args.service, **options)
    if args.service:
        raise UsageError("--service is for --profile vps; the cloud logs are the containers'")
    return _cloud(args).logs(**options)


@_handled
def cmd_exec(args: argparse.Namespace) -> int:
    given = args.inventory or []
    args.interactive = args.interactive or True in given
    files = [value for value in given if value is not True]
    if len(files) > 1:
        raise UsageError(f"-i given {len(files)} inventories; give one")
    args.inventory = Path(files[0]) if files else None
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        raise UsageError("give the command after --, e.g. prodstack exec ... -- python -m app "
                         "migrate")  # fmt: skip
    if _profile(args) == "vps":
        from prodstack.ops import vps

        return vps.exec_command(_remotes(args), command, interactive=args.interactive)
    if args.interactive:
        raise UsageError("-i on the cloud needs ECS Exec (`ecs_exec: true`); without it "
                         "run a one-off command")  # fmt: skip
    return _cloud(args).run_task(command)


@_handled
def cmd_lock(args: argparse.Namespace) -> int:
    if args.action == "acquire" and not (args.message or "").strip():
        raise UsageError("lock acquire needs -m MESSAGE: say why deploys must wait")
    if args.action != "acquire" and args.message:
        raise UsageError("-m is for lock acquire")
    if _profile(args) == "vps":
        from prodstack.ops import vps

        result = vps.lock(_remotes(args), args.action, args.message, args.force)
        _write(args, result, vps.render_lock(result))
        return 0
    from prodstack.ops import cloud

    result = cloud.lock_answer(args.stack)
    _write(args, result, result["message"] + "\n")
    return 0 if args.action == "status" else 1


@_handled
def cmd_audit(args: argparse.Namespace) -> int:
    if args.limit < 0:
        raise UsageError(f"--limit {args.limit}: must be zero (all) or more")
    if _profile(args) == "vps":
        from prodstack.ops import vps

        entries = vps.audit(_remotes(args), args.limit)
        _write(args, entries, vps.render_audit(entries))
        return 0
    raise UsageError("audit --stack: a cloud stack's history is Pulumi's (`pulumi stack "
                     "history`) and CloudTrail's; this verb reads the VPS hosts' audit log")


def register(sub: Any, subcommand: Any) -> None:
    """Add the verbs to the CLI's subparsers (`subcommand` is cli.py's `_subcommand`)."""
    status = subcommand(sub, "status", "what runs now: release, replicas, database, alerts",
                        "VPS: per host, the current release and its age, each replica's "
                        "readiness, the nginx upstream, the strategy and a bake in progress, "
                        "PostgreSQL and Redis, the last backup and restore drill, the alerts "
                        "firing. Cloud: the service's deployments, tasks, target health, image "
                        "and alarms.", STATUS_EXAMPLES)  # fmt: skip
    _target_args(status)
    status.set_defaults(func=cmd_status)

    logs = subcommand(sub, "logs", "the API's logs, every replica merged in time order",
                      "VPS: every replica on every web host (prefixed host/replica), or a "
                      "service's journal. Cloud: the api and migrate containers' CloudWatch "
                      "Logs (prefixed with the task id).", LOGS_EXAMPLES)  # fmt: skip
    _target_args(logs)
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    logs.add_argument("--since", metavar="DURATION", help="only lines this recent: 90s, 10m, 2h")
    logs.add_argument("--grep", metavar="TEXT", help="only lines containing TEXT")
    logs.add_argument("--request-id", metavar="ID",
                      help="only the lines of this request (its X-Request-ID)")  # fmt: skip
    logs.add_argument("--service", choices=("nginx", "postgres", "redis", "backup"),
                      help="vps: this service's journal instead of the API's logs")  # fmt: skip
    logs.set_defaults(func=cmd_logs)

    exec_ = subcommand(sub, "exec", "a one-off container of the current release",
                       "Run CMD in a new container of the current image with the app's "
                       "environment and a replica's confinement, removed afterwards. VPS: on "
                       "the first web host (or --host). Cloud: an ECS task of the API task "
                       "definition; its logs are streamed and its exit code returned.",
                       EXEC_EXAMPLES)  # fmt: skip
    _target_args(exec_, host=True)
    exec_.add_argument("--interactive", action="store_true",
                       help="attach a terminal (as a bare -i does: `-i INVENTORY -i`)")
    exec_.add_argument("command", nargs=argparse.REMAINDER, metavar="-- CMD ...")
    exec_.set_defaults(func=cmd_exec)

    lock = subcommand(sub, "lock", "hold deploys while you work: acquire -m, release, status",
                      "A deploy lock on the hosts with who, when and why. While someone else "
                      "holds it, deploys, rollbacks and restores refuse at once, naming the "
                      "holder. Cloud: Pulumi's own stack lock serialises `pulumi up`.",
                      LOCK_EXAMPLES)  # fmt: skip
    lock.add_argument("action", choices=("acquire", "release", "status"))
    lock.add_argument("-m", "--message", help="acquire: why (shown to whoever is refused)")
    lock.add_argument("--force", action="store_true", help="release: someone else's lock")
    _target_args(lock)
    lock.set_defaults(func=cmd_lock)

    audit = subcommand(sub, "audit", "who deployed, rolled back, locked, ran what, and when",
                       "The hosts' append-only audit log: deploys, rollbacks, restores, "
                       "lock events, config pushes and execs, oldest first.",
                       AUDIT_EXAMPLES)  # fmt: skip
    _target_args(audit)
    audit.add_argument("--limit", type=int, default=0, metavar="N", help="the newest N only")
    audit.set_defaults(func=cmd_audit)
