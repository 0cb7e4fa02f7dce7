"""prodstack-restore: point-in-time restore of the live cluster with pgBackRest.

    prodstack-restore latest [--repo N]                     # replay all archived WAL
    prodstack-restore 2026-12-01T10:15:00Z [--repo N]       # the state at that time
    prodstack-restore 20261201-020003F_20261202-020004D     # that backup, as it ended

Stops PostgreSQL, restores in place (--delta: only changed files are fetched), recovers
to the target and promotes, and waits until the cluster accepts writes. With --repo the
backup and WAL come from that repository (2: the off-site one); else pgBackRest takes
the first repository that has what the target needs. If repository 1 has no backup of
the restored cluster afterwards (it was lost with the host, or this host replaces a lost
one and its repository 1 held the stanza of the empty cluster it was deployed with, which
is moved aside), the stanza is created there and a full backup taken, so the drill and
the next PITR have a base. It does not touch the API replicas:
`pyinfra restore.py` stops them before and brings them back after. Managed by prodstack.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import subprocess
import sys
import time

from prodstack.host import common

CONFIG = common.BACKUP_CONFIG
BACKUP = common.command("prodstack-backup")
LABEL = re.compile(r"^\d{8}-\d{6}F(_\d{8}-\d{6}[DI])?$")


def log(message):
    common.say("prodstack-restore", message)


def parse_target(target):
    """The pgBackRest options for a target, or SystemExit naming what is accepted."""
    if target == "latest":
        return ["--type=default"]
    if LABEL.match(target):
        return [f"--set={target}", "--type=immediate", "--target-action=promote"]
    try:
        when = datetime.datetime.fromisoformat(target)
    except ValueError:
        when = None
    if when is None or when.tzinfo is None:
        sys.exit(
            f"prodstack-restore: {target!r} is not `latest`, a backup label such as "
            "20261201-020003F, or an ISO 8601 time with a zone such as 2026-12-01T10:15:00Z"
        )
    stamp = when.astimezone(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S.%f+00")
    return ["--type=time", f"--target={stamp}", "--target-action=promote"]


def run(*args, check=True, capture=False):
    result = subprocess.run(args, capture_output=capture, text=True)
    if check and result.returncode != 0:
        detail = (result.stderr or "")[-2000:] if capture else ""
        sys.exit(f"prodstack-restore: {' '.join(args[:6])} failed ({result.returncode}) {detail}")
    return result


def pgbackrest(cfg, *args, **kwargs):
    return run("runuser", "-u", "postgres", "--", "pgbackrest", f"--stanza={cfg['stanza']}",
               *args, **kwargs)  # fmt: skip


def writable(cfg):
    result = run("runuser", "-u", "postgres", "--", "psql", "-XAtq", "-p", str(cfg["port"]),
                 "-d", "postgres", "-c", "select pg_is_in_recovery()",
                 check=False, capture=True)  # fmt: skip
    return result.returncode == 0 and result.stdout.strip() == "f"


def repo1_backups(cfg):
    result = pgbackrest(cfg, "--repo=1", "--output=json", "info", check=False, capture=True)
    try:
        stanzas = json.loads(result.stdout or "[]")
    except ValueError:
        return 0
    return len(stanzas[0]["backup"]) if stanzas else 0


def main():
    args = sys.argv[1:]
    repo = []
    if len(args) == 3 and args[1] == "--repo" and args[2] in ("1", "2"):
        repo, args = [f"--repo={args[2]}"], args[:1]
    if len(args) != 1:
        sys.exit(__doc__)
    options = parse_target(args[0])
    cfg = common.load_json(CONFIG)
    started = time.monotonic()
    if writable(cfg):
        # The WAL since the last segment switch is only in pg_wal, which the restore
        # replaces: switch and wait until it is archived, so every write up to the stop
        # can be recovered.
        log("archiving the current WAL before the stop")
        if pgbackrest(cfg, "check", check=False).returncode != 0:
            log("WARNING: the current WAL could not be archived to every repository")
    log(f"stopping {cfg['unit']}")
    run("systemctl", "stop", cfg["unit"])
    log(f"restoring to {args[0]} ({' '.join(options + repo)})")
    pgbackrest(cfg, *repo, "--delta", *options, "restore")
    log(f"restored in {time.monotonic() - started:.0f} s; starting PostgreSQL and recovering")
    run("systemctl", "start", cfg["unit"])
    deadline = time.monotonic() + 6 * 3600
    while not writable(cfg):
        if time.monotonic() > deadline:
            sys.exit("prodstack-restore: PostgreSQL did not finish recovery; see its log")
        time.sleep(1)
    log(f"PostgreSQL accepts writes, {time.monotonic() - started:.0f} s after the stop")
    states = json.loads(run(BACKUP, "states", capture=True).stdout)
    if states["1"][0] == "foreign":
        # A replacement host's repository 1 may hold the stanza of the empty cluster it was
        # deployed with (an older deploy created one): keep it aside, make a new one.
        set_aside(cfg)
    if states["1"][0] != "ours" or repo1_backups(cfg) == 0:
        log("repository 1 has no backup of this cluster: creating its stanza and a full backup")
        run(BACKUP, "init")
    log("done")


def set_aside(cfg):
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    for kind in ("archive", "backup"):
        path = os.path.join(cfg["repo1_path"], kind, cfg["stanza"])
        if os.path.exists(path):
            os.rename(path, f"{path}.replaced-{stamp}")
            log(f"repository 1 held another cluster's {kind}: moved to {path}.replaced-{stamp}")


if __name__ == "__main__":
    main()
