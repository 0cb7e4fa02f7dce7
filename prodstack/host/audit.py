"""prodstack-audit: this host's append-only record of what operators did (managed by prodstack).

    prodstack-audit record [--by WHO] EVENT [KEY=VALUE ...]
    prodstack-audit show [--json] [--limit N]

EVENT is one of deploy, rollback, start, stop, restore, lock-acquire, lock-release,
lock-refused, exec, config-push. Each record is one JSON line: the time, the event, who
(--by, else the sudo user, else the login user), the host and the fields given.

The file is /var/log/prodstack/audit.log, root-owned, mode 0640 (group adm reads it).
Records are only ever appended (O_APPEND, under an exclusive lock); logrotate rotates it
monthly and keeps two years (/etc/logrotate.d/prodstack-audit). `show` reads the rotated
files too, oldest first.
"""

from __future__ import annotations

import argparse
import fcntl
import getpass
import glob
import grp
import gzip
import json
import os
import socket
import sys

from prodstack.host import common

LOG = "/var/log/prodstack/audit.log"
EVENTS = ("deploy", "rollback", "start", "stop", "restore", "lock-acquire", "lock-release",
          "lock-refused", "exec", "config-push")  # fmt: skip
# A value longer than this is cut: a record stays one readable line.
MAX_VALUE = 2000


def who(by=None):
    return by or os.environ.get("PRODSTACK_OPERATOR") or os.environ.get("SUDO_USER") \
        or getpass.getuser()


def record(event, by=None, **fields):
    """Append one record. Values are JSON-encoded: quotes and newlines stay inside it."""
    if event not in EVENTS:
        raise SystemExit(f"prodstack-audit: unknown event {event!r}; one of {', '.join(EVENTS)}")
    entry = {"time": common.utc_stamp(), "event": event,
             "by": who(by)[:200], "host": socket.gethostname()}  # fmt: skip
    for key, value in fields.items():
        entry[key] = str(value)[:MAX_VALUE]
    line = (json.dumps(entry, sort_keys=True) + "\n").encode()
    os.makedirs(os.path.dirname(LOG), mode=0o750, exist_ok=True)
    fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        if os.fstat(fd).st_size == 0:  # new: as logrotate creates it, root:adm 0640
            os.fchown(fd, 0, grp.getgrnam("adm").gr_gid)
        os.write(fd, line)
    finally:
        os.close(fd)
    return entry


def _files():
    """The log and its rotations, oldest first (audit.log.12.gz ... audit.log.1, audit.log)."""

    def generation(path):
        suffix = path[len(LOG):].lstrip(".").removesuffix(".gz")
        return int(suffix) if suffix.isdigit() else 0

    return sorted(glob.glob(LOG + ".*"), key=generation, reverse=True) + [LOG]


def entries():
    for path in _files():
        opener = gzip.open if path.endswith(".gz") else open
        try:
            with opener(path, "rt", encoding="utf-8", errors="replace") as f:
                for line in f:
                    try:
                        yield json.loads(line)
                    except ValueError:
                        yield {"event": "unreadable", "line": line.rstrip("\n")[:MAX_VALUE]}
        except FileNotFoundError:
            continue


def main():
    parser = argparse.ArgumentParser(prog="prodstack-audit")
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("record")
    r.add_argument("event", choices=EVENTS)
    r.add_argument("--by")
    r.add_argument("fields", nargs="*", metavar="KEY=VALUE")
    s = sub.add_parser("show")
    s.add_argument("--json", action="store_true")
    s.add_argument("--limit", type=int, default=0, help="only the newest N records")
    args = parser.parse_args()

    if args.command == "record":
        fields = {}
        for item in args.fields:
            key, sep, value = item.partition("=")
            if not sep or not key.isidentifier():
                parser.error(f"{item!r}: expected KEY=VALUE")
            fields[key] = value
        record(args.event, by=args.by, **fields)
        return 0
    found = list(entries())
    if args.limit > 0:
        found = found[-args.limit:]
    for entry in found:
        if args.json:
            print(json.dumps(entry, sort_keys=True))
        else:
            rest = " ".join(f"{k}={json.dumps(v)}" for k, v in sorted(entry.items())
                            if k not in ("time", "event", "by", "host"))  # fmt: skip
            print(f"{entry.get('time', '?')} {entry.get('event', '?')} by {entry.get('by', '?')}"
                  f" {rest}".rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
