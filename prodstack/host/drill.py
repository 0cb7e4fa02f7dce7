"""prodstack-restore-drill: prove the latest backup restores, every day.

    prodstack-restore-drill run            # the daily timer: repository 1 (on this host)
    prodstack-restore-drill run --repo=2   # its own weekly timer: the off-site repository
    prodstack-restore-drill cleanup        # remove the scratch cluster (ExecStopPost)

Restores the newest backup of the repository that has a backup point (prodstack-backup)
into a scratch cluster in drill_directory (first checking that the disk it shares with the
live database has room for the backup's size from `pgbackrest info`, and keeps 10% free),
recovering WAL up to that point. The scratch cluster listens on a Unix socket in its own
directory only (drill_port names the socket), does not archive, and never touches the
live cluster or the API replicas.
Checks: it starts and leaves recovery, its migration is the one recorded at the point,
and every application table has the row count recorded there. Then it writes
prodstack_restore_drill.prom into the node exporter's textfile directory and removes
the scratch cluster. Exit 1 on any failure. The off-site drill writes its own
prodstack_restore_drill_offsite.prom (metrics prodstack_restore_drill_offsite_*); the two
drills share the scratch directory and wait for each other. Managed by prodstack.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time

from prodstack.host import common

CONFIG = common.BACKUP_CONFIG


def log(message):
    common.say("prodstack-restore-drill", message)


class DrillFailed(Exception):
    pass


def as_postgres(*args, check=True):
    result = common.as_postgres(*args, capture_output=True, text=True)
    if check and result.returncode != 0:
        detail = (result.stderr or result.stdout)[-1500:]
        raise DrillFailed(f"{args[0]} {args[-1]} failed: {detail}")
    return result


write_atomically = common.write_atomically


def bindir(cfg):
    return f"/usr/lib/postgresql/{cfg['version']}/bin"


def newest_point(cfg, repo=1):
    out = as_postgres("pgbackrest", f"--stanza={cfg['stanza']}", f"--repo={repo}",
                      "--output=json", "info").stdout  # fmt: skip
    stanzas = json.loads(out or "[]")
    backups = {b["label"]: b for b in (stanzas[0]["backup"] if stanzas else [])
               if b["database"]["repo-key"] == repo}  # fmt: skip
    labels = set(backups)
    directory = cfg["points_directory"]
    points = []
    for name in os.listdir(directory) if os.path.isdir(directory) else []:
        with open(os.path.join(directory, name)) as f:
            point = json.load(f)
        found = [label for label in point["labels"] if label in labels]
        if found:
            points.append((point["recorded_at"], found[0], point))
    if not points:
        raise DrillFailed(f"no backup with a recorded backup point in repository {repo}")
    _, label, point = max(points)
    return label, point, backups[label]["info"]["size"]


# Room the live database keeps on the disk the drill shares with it: the drill never
# takes the disk below this share of its size.
RESERVE = 0.10


def space_problem(needed, usage):
    """Why the disk has no room for a scratch copy of `needed` bytes, or None."""
    mib = 1024 * 1024
    left = usage.free - needed
    if left < usage.total * RESERVE:
        return (
            f"not enough space for the scratch cluster: the backup restores to "
            f"{needed // mib} MiB, {usage.free // mib} MiB are free, and the live database "
            f"keeps {int(RESERVE * 100)}% of the disk ({int(usage.total * RESERVE) // mib} MiB); "
            "free space or grow the disk"
        )
    return None


def scratch_settings(cfg):
    """postgresql.conf for the scratch cluster: private socket, no TCP, no archiving."""
    drill = cfg["drill_directory"]
    return (
        f"port = {cfg['drill_port']}\n"
        "listen_addresses = ''\n"
        f"unix_socket_directories = '{drill}'\n"
        f"hba_file = '{drill}/pg_hba.conf'\n"
        f"ident_file = '{drill}/pg_ident.conf'\n"
        "max_connections = 20\n"
        "shared_buffers = 128MB\n"
        # Off: a standby checks its limits against the primary's; this cluster is not one.
        "hot_standby = off\n"
        "archive_mode = off\n"
        "fsync = off\n"
        "log_min_messages = warning\n"
    )


def cleanup(cfg):
    drill = cfg["drill_directory"]
    data = os.path.join(drill, "data")
    if os.path.exists(os.path.join(data, "postmaster.pid")):
        as_postgres(f"{bindir(cfg)}/pg_ctl", "-D", data, "-m", "immediate", "stop", check=False)
    if os.path.exists(drill):
        shutil.rmtree(drill)
        log(f"removed {drill}")


def run_script(args):
    """A prodstack script (it runs its own commands as postgres)."""
    result = subprocess.run(args, capture_output=True, text=True)
    if result.returncode != 0:
        detail = (result.stderr or result.stdout)[-1500:]
        raise DrillFailed(f"{' '.join(args[:2])} failed: {detail}")
    return result


def drill(cfg, repo=1):
    cleanup(cfg)
    label, point, size = newest_point(cfg, repo)
    drill_dir = cfg["drill_directory"]
    # The size pgBackRest reports for the backup is what the restore writes (WAL replayed
    # on top is bounded by max_wal_size, inside the reserve).
    problem = space_problem(size, shutil.disk_usage(os.path.dirname(drill_dir)))
    if problem:
        raise DrillFailed(problem)
    log(f"restoring {label} from repository {repo} to {point['restore_point']} into "
        f"{cfg['drill_directory']}")  # fmt: skip
    data = os.path.join(drill_dir, "data")
    for directory in (drill_dir, data):
        os.makedirs(directory, mode=0o700)
        shutil.chown(directory, "postgres", "postgres")
    as_postgres(
        "pgbackrest", f"--stanza={cfg['stanza']}", f"--repo={repo}", f"--pg1-path={data}",
        f"--set={label}", "--type=name", f"--target={point['restore_point']}",
        # No retries: a file that fails its checksum once is the finding, not a hiccup.
        "--target-action=promote", "--archive-mode=off", "--job-retry=0", "restore",
    )  # fmt: skip
    settings = scratch_settings(cfg)
    for name, text in (("postgresql.conf", settings),
                       ("pg_hba.conf", "local all postgres peer\n"),
                       ("pg_ident.conf", "")):  # fmt: skip
        path = os.path.join(drill_dir, name)
        with open(path, "w") as f:
            f.write(text)
        shutil.chown(path, "postgres", "postgres")
    as_postgres(
        f"{bindir(cfg)}/pg_ctl", "-D", data, "-o", f"-c config_file={drill_dir}/postgresql.conf",
        "-l", os.path.join(drill_dir, "postgres.log"), "-w", "-t", "3600", "start",
    )  # fmt: skip
    # pg_ctl returns once the postmaster runs; recovery (no connections meanwhile, as
    # hot_standby is off) ends at the restore point with a promotion.
    deadline = time.monotonic() + 3600
    while True:
        result = as_postgres(
            f"{bindir(cfg)}/psql", "-XAtq", "-h", drill_dir, "-p", str(cfg["drill_port"]),
            "-d", cfg["database"], "-c", "select pg_is_in_recovery()", check=False,
        )  # fmt: skip
        if result.returncode == 0 and result.stdout.strip() == "f":
            break
        if time.monotonic() > deadline or not os.path.exists(os.path.join(data, "postmaster.pid")):
            with open(os.path.join(drill_dir, "postgres.log")) as f:
                tail = f.read()[-1500:]
            raise DrillFailed(f"the scratch cluster did not finish recovery:\n{tail}")
        time.sleep(0.5)
    # The same query the backup point ran (as the owner role, names built on the server).
    result = run_script([common.command("prodstack-backup"), "counts", drill_dir,
                               str(cfg["drill_port"])])  # fmt: skip
    got = json.loads(result.stdout)
    problems = []
    if point.get("migration") is not None and got["migration"] != point["migration"]:
        problems.append(f"migration {got['migration']!r}, expected {point['migration']!r}")
    for table, expected in sorted(point["counts"].items()):
        if got["counts"].get(table) != expected:
            problems.append(f"{table}: {got['counts'].get(table)} rows, expected {expected}")
    if problems:
        raise DrillFailed("restored data differs from the backup point: " + "; ".join(problems))
    log(f"ok: {len(point['counts'])} tables with the recorded row counts, "
        f"migration {point.get('migration')}")  # fmt: skip


def metric_names(repo):
    """(textfile, metric prefix): repository 1's as they always were, the off-site's apart,
    so each has its own alerts (a daily and a weekly schedule)."""
    if repo == 1:
        return "prodstack_restore_drill.prom", "prodstack_restore_drill"
    return "prodstack_restore_drill_offsite.prom", "prodstack_restore_drill_offsite"


def parse(args):
    """The command and repository from the arguments, or None."""
    if args in ([], ["run"]):
        return "run", 1
    if args == ["run", "--repo=2"]:
        return "run", 2
    if args == ["cleanup"]:
        return "cleanup", None
    return None


def previous_success(path, prefix="prodstack_restore_drill"):
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(f"{prefix}_last_success_timestamp_seconds "):
                    return float(line.split()[1])
    except OSError:
        pass
    return None


def main():
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("prodstack-restore-drill: terminated"))
    cfg = common.load_json(CONFIG)
    parsed = parse(sys.argv[1:])
    if parsed is None:
        sys.exit(__doc__)
    command, repo = parsed
    # The daily and the off-site drill share the scratch directory and its port: one at a
    # time (the lock is released when the process ends, however it ends).
    lock_path = os.path.join(os.path.dirname(cfg["drill_directory"]),
                             ".prodstack-restore-drill.lock")  # fmt: skip
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return locked_run(cfg, command, repo)


def locked_run(cfg, command, repo):
    if command == "cleanup":
        cleanup(cfg)
        return 0
    name, prefix = metric_names(repo)
    path = os.path.join(cfg["metrics_directory"], name)
    last_success = previous_success(path, prefix)
    started = time.monotonic()
    ok = False
    try:
        drill(cfg, repo)
        ok = True
    except DrillFailed as failure:
        log(f"FAILED: {failure}")
    finally:
        duration = time.monotonic() - started
        try:
            cleanup(cfg)
        except OSError as error:
            log(f"cleanup failed: {error}")
            ok = False
        if ok:
            last_success = time.time()
        write_atomically(path, drill_metrics(prefix, ok, duration, last_success))
        log(f"repository {repo}: {'passed' if ok else 'failed'} in {duration:.1f} s")
    return 0 if ok else 1


def drill_metrics(prefix, ok, duration, last_success):
    which = "the off-site restore drill" if prefix.endswith("offsite") else "the restore drill"
    lines = [
        f"# HELP {prefix}_success 1 if the last run of {which} passed.",
        f"# TYPE {prefix}_success gauge",
        f"{prefix}_success {int(ok)}",
        f"# HELP {prefix}_duration_seconds Duration of the last run of {which}.",
        f"# TYPE {prefix}_duration_seconds gauge",
        f"{prefix}_duration_seconds {duration:.1f}",
    ]
    if last_success is not None:
        lines += [
            f"# HELP {prefix}_last_success_timestamp_seconds When {which} last passed.",
            f"# TYPE {prefix}_last_success_timestamp_seconds gauge",
            f"{prefix}_last_success_timestamp_seconds {last_success:.0f}",
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
