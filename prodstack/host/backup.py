"""prodstack-backup: pgBackRest backups of record, their metrics, and an optional logical export.

    prodstack-backup full|diff|incr   # the timers: a weekly full, daily differentials
    prodstack-backup init             # the deploy: create the stanza where it is missing,
                                      # then a full backup into each repository without one
    prodstack-backup states           # each repository: ours|empty|foreign|unreadable|unreachable
    prodstack-backup metrics          # rewrite the backup metrics from `pgbackrest info`
    prodstack-backup verify           # weekly: pgbackrest verify of the off-site repository
    prodstack-backup bucket           # refuse an off-site bucket without versioning or
                                      # Object Lock (S3 API, the host's key); init runs it
    prodstack-backup bucket-state     # the deploy's fact: that check as JSON
    prodstack-backup export PATH      # on demand: a pg_dump -Fc of the app database (0600)
    prodstack-backup counts SOCKET PORT  # the restore drill: a cluster's row counts (JSON)

A backup runs once per repository (pgBackRest writes one repository per `backup`; WAL is
archived to all of them continuously). Before it, a free-space check: repository 1 must
have room for the whole database. After it, a *backup point*: with the application
tables locked against writes for a moment, their row counts and the schema's migration
are recorded together with a named restore point, then `pgbackrest check` waits until the
WAL holding that point is archived. The restore drill restores the backup to that point
and compares. Settings: /etc/prodstack/backup.json; pgBackRest's: /etc/pgbackrest.conf.
Managed by prodstack.
"""

from __future__ import annotations

import configparser
import datetime
import json
import os
import re
import shutil
import signal
import sys
import time

from prodstack.host import common

CONFIG = common.BACKUP_CONFIG
TYPES = ("full", "diff", "incr")


def log(message):
    common.say("prodstack-backup", message)


def load():
    return common.load_json(CONFIG)


as_postgres = common.as_postgres
write_atomically = common.write_atomically


# pgBackRest's exit code when another of its processes holds the lock it needs (the
# asynchronous archive-push after a restore's promotion, say): waited out, not failed.
LOCK_ACQUIRE_ERROR = 50
LOCK_WAIT_SECONDS = 180


def pgbackrest(cfg, *args, check=True, capture=False):
    config = [f"--config={cfg['pgbackrest_config']}"] if cfg.get("pgbackrest_config") else []
    deadline = time.monotonic() + LOCK_WAIT_SECONDS
    while True:
        result = as_postgres(
            "pgbackrest", *config, f"--stanza={cfg['stanza']}", *args,
            capture_output=capture, text=True,
        )  # fmt: skip
        if result.returncode != LOCK_ACQUIRE_ERROR or time.monotonic() > deadline:
            break
        log(f"pgbackrest {args[-1]}: another pgBackRest process holds the lock; waiting")
        time.sleep(3)
    if check and result.returncode != 0:
        detail = (result.stderr or "").strip()[-2000:] if capture else ""
        raise SystemExit(
            f"prodstack-backup: pgbackrest {args[-1]} failed ({result.returncode}) {detail}"
        )
    return result


def psql(cfg, sql, database=None):
    result = as_postgres(
        "psql", "-XAtq", "-v", "ON_ERROR_STOP=1", "-p", str(cfg["port"]),
        "-d", database or cfg["database"],
        input=sql, capture_output=True, text=True,
    )  # fmt: skip
    if result.returncode != 0:
        raise SystemExit(f"prodstack-backup: psql failed: {result.stderr.strip()}")
    return result.stdout.strip()


def info(cfg):
    out = pgbackrest(cfg, "--output=json", "info", capture=True).stdout
    stanzas = json.loads(out or "[]")
    return stanzas[0] if stanzas else {"backup": [], "repo": []}


def check_free_space(cfg):
    size = int(psql(cfg, "select sum(pg_database_size(datname)) from pg_database", "postgres"))
    free = shutil.disk_usage(cfg["repo1_path"]).free
    mib = 1024 * 1024
    if free < size:
        raise SystemExit(
            f"prodstack-backup: not enough space in {cfg['repo1_path']}: the databases take "
            f"{size // mib} MiB and {free // mib} MiB are free; free space or grow the disk"
        )
    log(f"free space ok: {free // mib} MiB free for {size // mib} MiB of databases")


# Every table the owner role may read and lock, outside the catalogs, whose rows survive a
# restore (permanent: an unlogged table comes back empty, another session's temporary
# table cannot be read). Names leave the server only as JSON keys, quoted by format('%I').
TABLES = """
select format('%I.%I', n.nspname, c.relname) as name
  from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace
 where c.relkind in ('r', 'p') and c.relpersistence = 'p'
   and n.nspname not in ('pg_catalog', 'information_schema') and n.nspname !~ '^pg_toast'
   and pg_catalog.has_table_privilege(c.oid, 'SELECT')
   and pg_catalog.has_table_privilege(c.oid, 'UPDATE, DELETE, TRUNCATE')
"""
# The counts and the migration, built on the server: each count runs through query_to_xml
# with a name quoted by format('%I.%I'), so no name is ever pasted into SQL text here.
COUNTS = f"""
select pg_catalog.json_build_object(
  'counts', coalesce((
    select pg_catalog.json_object_agg(t.name, x.c order by t.name)
      from ({TABLES}) t,
           xmltable('/row' passing pg_catalog.query_to_xml(
               pg_catalog.format('select pg_catalog.count(*) as c from %s', t.name),
               false, true, '')
             columns c bigint path 'c') x), '{{}}'::json),
  'migration', case
    when pg_catalog.has_table_privilege(pg_catalog.to_regclass('public.schema_migrations'),
                                        'SELECT')
    then (select x.v
            from xmltable('/row' passing pg_catalog.query_to_xml(
                     'select pg_catalog.max(version)::text as v from public.schema_migrations',
                     false, true, '')
                   columns v text path 'v') x)
  end);
"""
# Session settings for every statement that touches the application's tables: catalog
# functions only (a function the app defines in public cannot stand in for one of them),
# and an error instead of any row-level security policy (a policy is code the app wrote).
# Then the owner role, so the app's objects are read with the app's own rights: SET ROLE
# keeps the session's superuser behind it, which is why nothing the app wrote may run.
GUARDS = """\\set ON_ERROR_STOP 1
set search_path = pg_catalog, pg_temp;
set row_security = off;
"""
# Writes wait on the SHARE locks (and behind a LOCK that waits): lock_timeout bounds the
# wait, statement_timeout the counting; both in backup.json.
POINT = GUARDS + f"""set lock_timeout = :'lock_timeout';
set statement_timeout = :'statement_timeout';
select pg_catalog.clock_timestamp() as asked_at \\gset
begin;
set local role :"owner";
do $lock$
declare
  targets text;
begin
  select pg_catalog.string_agg(t.name, ', ' order by t.name) into targets from ({TABLES}) t;
  if targets is not null then
    execute 'lock table ' || targets || ' in share mode';
  end if;
end
$lock$;
select pg_catalog.clock_timestamp() as locked_at \\gset
{COUNTS}
reset role;
select pg_catalog.pg_create_restore_point(:'name') is not null;
select pg_catalog.round(1000 * extract(epoch from
         pg_catalog.clock_timestamp() - :'locked_at'::timestamptz)),
       pg_catalog.round(1000 * extract(epoch from
         :'locked_at'::timestamptz - :'asked_at'::timestamptz));
commit;
"""
COUNT_ONLY = GUARDS + """begin;
set local role :"owner";
""" + COUNTS + "commit;\n"
LOCK_TIMEOUT = "canceling statement due to lock timeout"


def psql_script(cfg, script, variables, socket=None, port=None):
    """Run a psql script as postgres with `variables` as psql variables (:'x' quotes a
    literal, :"x" an identifier): values reach the server quoted, never as SQL text."""
    args = ["psql", "-XAtq", "-h", socket or cfg.get("socket_directory", "/var/run/postgresql"),
            "-p", str(port or cfg["port"]), "-d", cfg["database"]]  # fmt: skip
    for key, value in variables.items():
        args += ["-v", f"{key}={value}"]
    return as_postgres(*args, input=script, capture_output=True, text=True)


def counts(cfg, socket=None, port=None):
    """Row counts and migration as the owner role sees them (the restore drill's check)."""
    result = psql_script(cfg, COUNT_ONLY, {"owner": cfg["owner_role"]}, socket, port)
    if result.returncode != 0:
        raise SystemExit(f"prodstack-backup: counting rows failed: {result.stderr.strip()}")
    return json.loads(result.stdout.splitlines()[0])


def take_point(cfg, name, attempts=3):
    """Lock the tables, count them and create the restore point `name`, in one transaction;
    a lock that is not granted within lock_timeout is retried after a pause, then fails."""
    variables = {"owner": cfg["owner_role"], "name": name,
                 "lock_timeout": cfg["point_lock_timeout"],
                 "statement_timeout": cfg["point_statement_timeout"]}  # fmt: skip
    for attempt in range(1, attempts + 1):
        result = psql_script(cfg, POINT, variables)
        if result.returncode == 0:
            break
        if LOCK_TIMEOUT not in result.stderr or attempt == attempts:
            raise SystemExit(f"prodstack-backup: backup point failed: {result.stderr.strip()}")
        log(f"backup point: tables busy ({cfg['point_lock_timeout']} lock timeout), "
            f"attempt {attempt} of {attempts}")  # fmt: skip
        time.sleep(5 * attempt)
    lines = result.stdout.splitlines()
    point = json.loads(lines[0])
    held, waited = (int(float(v)) for v in lines[2].split("|"))
    point.update(freeze_ms={"lock_wait": waited, "held": held})
    return point


def record_point(cfg, labels):
    """Row counts and migration at a named restore point, taken while writes wait."""
    name = "prodstack-" + datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    point = take_point(cfg, name)
    point.update(restore_point=name, labels=labels,
                 recorded_at=datetime.datetime.now(datetime.UTC).isoformat())  # fmt: skip
    # Switches WAL and waits until the segment holding the restore point is archived.
    pgbackrest(cfg, "check")
    write_atomically(
        os.path.join(cfg["points_directory"], name + ".json"), json.dumps(point, indent=1), 0o600
    )
    freeze = point["freeze_ms"]
    log(f"backup point {name}: {sum(point['counts'].values())} rows in "
        f"{len(point['counts'])} tables; writes waited {freeze['lock_wait']} ms for the locks, "
        f"which were held {freeze['held']} ms")  # fmt: skip
    return point


def prune_points(cfg, current):
    """Drop points whose backups have all expired."""
    labels = {b["label"] for b in current["backup"]}
    directory = cfg["points_directory"]
    for name in sorted(os.listdir(directory)) if os.path.isdir(directory) else []:
        path = os.path.join(directory, name)
        try:
            with open(path) as f:
                point = json.load(f)
        except (OSError, ValueError):
            continue
        if not labels & set(point.get("labels", [])):
            os.unlink(path)
            log(f"dropped {name}: its backups have expired")


def metrics(cfg, current):
    """Per type, the newest backup's stop time and duration, taken over the repository
    that is furthest behind: an off-site copy that stopped working makes the figure age."""
    newest: dict[tuple[str, int], dict] = {}
    for b in current["backup"]:
        if b.get("error"):
            continue
        key = (b["type"], b["database"]["repo-key"])
        if key not in newest or b["timestamp"]["stop"] > newest[key]["timestamp"]["stop"]:
            newest[key] = b
    repos = range(1, cfg["repos"] + 1)
    lines = [
        "# HELP prodstack_backup_last_success_timestamp_seconds Stop time of the newest "
        "backup of this type, in the repository whose newest is oldest.",
        "# TYPE prodstack_backup_last_success_timestamp_seconds gauge",
    ]
    durations = [
        "# HELP prodstack_backup_last_duration_seconds How long that backup took.",
        "# TYPE prodstack_backup_last_duration_seconds gauge",
    ]
    for kind in TYPES:
        per_repo = [newest[(kind, r)] for r in repos if (kind, r) in newest]
        if len(per_repo) < len(repos):
            continue
        oldest = min(per_repo, key=lambda b: b["timestamp"]["stop"])
        stamps = oldest["timestamp"]
        lines.append(f'prodstack_backup_last_success_timestamp_seconds{{type="{kind}"}} '
                     f'{stamps["stop"]}')  # fmt: skip
        durations.append(f'prodstack_backup_last_duration_seconds{{type="{kind}"}} '
                         f'{stamps["stop"] - stamps["start"]}')  # fmt: skip
    fulls = [
        "# HELP prodstack_backup_last_full_timestamp_seconds Stop time of the newest full "
        "backup in each repository.",
        "# TYPE prodstack_backup_last_full_timestamp_seconds gauge",
    ]
    for repo in repos:
        full = newest.get(("full", repo))
        if full is not None:
            fulls.append(f'prodstack_backup_last_full_timestamp_seconds{{repo="{repo}"}} '
                         f'{full["timestamp"]["stop"]}')  # fmt: skip
    write_atomically(
        os.path.join(cfg["metrics_directory"], "prodstack_backup.prom"),
        "\n".join(lines + durations + fulls) + "\n",
    )


DAY = 86400


def tier_expiry(backups, now, daily, weekly, monthly):
    """(labels to expire, full backups of continuous WAL to keep) in repository 1, from
    `pgbackrest info`'s backups there. Kept: every backup of the last `daily` days and the
    newest one before them (point-in-time recovery over the whole daily window), every full
    of the last `weekly` days, the first full of each month of the last `monthly` days, and
    whatever a kept backup is based on. WAL is kept continuous from the daily window's
    first full only: an older tier restores to its own end, not to a point inside it."""
    ordered = sorted(backups, key=lambda b: b["timestamp"]["stop"])
    by_label = {b["label"]: b for b in ordered}
    keep, months = set(), set()
    before = [b for b in ordered if now - b["timestamp"]["stop"] > daily * DAY]
    if before:
        keep.add(before[-1]["label"])
    for b in ordered:
        age = now - b["timestamp"]["stop"]
        if age <= daily * DAY:
            keep.add(b["label"])
        if b["type"] != "full":
            continue
        month = time.strftime("%Y-%m", time.gmtime(b["timestamp"]["stop"]))
        first_of_month = month not in months
        months.add(month)
        if age <= weekly * DAY or (first_of_month and age <= monthly * DAY):
            keep.add(b["label"])
    for label in list(keep):
        keep.update(by_label[label].get("reference") or [])
    # A backup based on an expired one goes with it: name only the base.
    expire = [b["label"] for b in ordered if b["label"] not in keep
              and not set(b.get("reference") or []) - keep]  # fmt: skip
    recent = [b for b in ordered if now - b["timestamp"]["stop"] <= daily * DAY]
    start = before[-1] if before else (recent[0] if recent else None)
    if start is None:
        return expire, 1
    base = start if start["type"] == "full" else by_label[start["reference"][0]]
    wal_fulls = sum(1 for b in ordered if b["type"] == "full" and b["label"] in keep
                    and b["timestamp"]["stop"] >= base["timestamp"]["stop"])  # fmt: skip
    return expire, max(wal_fulls, 1)


def tiers(cfg, current):
    """Expire repository 1 down to its tiers (backup.json's retention_days: daily, weekly,
    monthly), then its WAL to the daily window. Repository 2 is never expired by the host
    (its key cannot delete): the bucket's lifecycle rules keep it."""
    days = cfg["retention_days"]
    mine = [b for b in current["backup"] if b["database"]["repo-key"] == 1]
    expire, wal_fulls = tier_expiry(mine, time.time(), days["daily"], days["weekly"],
                                    days["monthly"])  # fmt: skip
    for label in expire:
        log(f"repository 1: {label} is in no tier: expire")
        pgbackrest(cfg, "--repo=1", f"--set={label}", "expire")
    pgbackrest(cfg, "--repo=1", "--repo1-retention-archive-type=full",
               f"--repo1-retention-archive={wal_fulls}", "expire")  # fmt: skip
    return info(cfg) if expire else current


def backup(cfg, kind, repos=None):
    check_free_space(cfg)
    labels = []
    for repo in repos or range(1, cfg["repos"] + 1):
        started = time.monotonic()
        log(f"{kind} backup into repository {repo}")
        pgbackrest(cfg, f"--repo={repo}", f"--type={kind}", "backup")
        current = info(cfg)
        mine = [b for b in current["backup"] if b["database"]["repo-key"] == repo]
        label = max(mine, key=lambda b: b["timestamp"]["stop"])["label"]
        labels.append(label)
        log(f"repository {repo}: backup {label} in {time.monotonic() - started:.0f} s")
    record_point(cfg, labels)
    current = info(cfg)
    if 1 in (repos or range(1, cfg["repos"] + 1)) and cfg.get("retention_days"):
        current = tiers(cfg, current)
    prune_points(cfg, current)
    metrics(cfg, current)


def verify_problem(returncode, output):
    """Why `pgbackrest verify` found the repository unsound, or None. pgBackRest 2.45 ends
    with "completed successfully" (exit 0) even when it found invalid files: its summary
    then says `status: error`, with the files it could not verify."""
    if returncode != 0:
        return f"pgbackrest verify failed ({returncode}): {output.strip()[-1500:]}"
    if re.search(r"^\s*status: error", output, re.M):
        found = [line.strip() for line in output.splitlines() if "INFO:" not in line or
                 "invalid" in line or "missing" in line]  # fmt: skip
        return "pgbackrest verify found invalid files: " + " | ".join(found)[-1500:]
    return None


def verify(cfg):
    """Read back every file of the off-site repository (the local one without a bucket):
    checksums of backups and WAL, against the manifests. Weekly, by its timer."""
    repo = cfg["repos"]
    started = time.monotonic()
    result = pgbackrest(cfg, f"--repo={repo}", "--log-level-console=info", "verify",
                        check=False, capture=True)  # fmt: skip
    problem = verify_problem(result.returncode, (result.stdout or "") + (result.stderr or ""))
    path = os.path.join(cfg["metrics_directory"], "prodstack_backup_verify.prom")
    last = None
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("prodstack_backup_verify_last_success_timestamp_seconds"):
                    last = float(line.split()[1])
    except OSError:
        pass
    if problem is None:
        last = time.time()
    lines = [
        "# HELP prodstack_backup_verify_success 1 if the last pgbackrest verify found the "
        "repository sound.",
        "# TYPE prodstack_backup_verify_success gauge",
        f'prodstack_backup_verify_success{{repo="{repo}"}} {int(problem is None)}',
    ]
    if last is not None:
        lines += [
            "# HELP prodstack_backup_verify_last_success_timestamp_seconds When a verify "
            "last passed.",
            "# TYPE prodstack_backup_verify_last_success_timestamp_seconds gauge",
            f'prodstack_backup_verify_last_success_timestamp_seconds{{repo="{repo}"}} {last:.0f}',
        ]
    write_atomically(path, "\n".join(lines) + "\n")
    if problem:
        raise SystemExit(f"prodstack-backup: repository {repo}: {problem}")
    log(f"repository {repo} verified in {time.monotonic() - started:.0f} s")


def system_id(cfg):
    return int(psql(cfg, "select system_identifier from pg_control_system()", "postgres"))


def repo_states(cfg):
    """{repo: (state, detail)} from one `pgbackrest info`, against this cluster:
    ours (this cluster's stanza), empty (no stanza yet), foreign (another cluster's
    history: the host was replaced, or shares a bucket prefix), unreadable (the
    passphrase does not decrypt it), unreachable (anything else, such as an S3 outage)."""
    result = pgbackrest(cfg, "--output=json", "info", check=False, capture=True)
    try:
        stanza = (json.loads(result.stdout or "[]") or [{}])[0]
    except ValueError:
        stanza = {}
    mine = system_id(cfg)
    states = {}
    for repo in range(1, cfg["repos"] + 1):
        entry = next((r for r in stanza.get("repo", []) if r["key"] == repo), None)
        if entry is None:
            states[repo] = ("unreachable", (result.stderr or "no answer").strip()[-500:])
            continue
        code, message = entry["status"]["code"], entry["status"]["message"]
        dbs = [d for d in stanza.get("db", []) if d["repo-key"] == repo]
        if code in (1, 3):
            states[repo] = ("empty", message)
        elif code in (0, 2) and dbs:
            current = max(dbs, key=lambda d: d["id"])
            if current["system-id"] == mine:
                states[repo] = ("ours", message)
            else:
                states[repo] = ("foreign", f"system id {current['system-id']}, this cluster's "
                                           f"is {mine}")  # fmt: skip
        elif "[FormatError]" in message or "[CryptoError]" in message:
            states[repo] = ("unreadable", message.splitlines()[0][:300])
        else:
            states[repo] = ("unreachable", message.splitlines()[0][:300])
    return states


def only_repo1(cfg):
    """A copy of pgbackrest.conf without repository 2 (0600, postgres's), for work that
    must go on while repository 2 cannot be used; pgBackRest's stanza-create always
    writes every configured repository."""
    path = "/var/spool/pgbackrest/repo1-only.conf"
    with open("/etc/pgbackrest.conf") as f:
        text = "".join(line for line in f if not line.startswith("repo2-"))
    write_atomically(path, text, 0o600)
    shutil.chown(path, "postgres", "postgres")
    return {**cfg, "repos": 1, "pgbackrest_config": path}


WHY = {
    "foreign": "holds another cluster's backups ({detail}). If this host replaces a lost "
    "one, restore from it: `pyinfra inventory.py restore.py --data restore_to=latest "
    "--data restore_repo={repo} --data confirm=yes` (docs/vps.md, \"Disaster recovery\"). "
    "If not, give this host its own backup_s3_prefix. Nothing was created in any repository",
    "unreadable": "cannot be decrypted with this host's BACKUP_CIPHER_PASSPHRASE ({detail}): "
    "a repository keeps the passphrase it was created with; put the old one back in the "
    "secrets",
    "unreachable": "cannot be reached ({detail}); the deploy goes on without it and "
    "the next deploy tries again",
}


def s3_settings(path):
    """Repository 2's S3 settings from pgbackrest.conf (the host's key never leaves it)."""
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        parser.read_file(f)
    conf = parser["global"]
    if conf.get("repo2-type") != "s3":
        return None
    host, port = conf["repo2-s3-endpoint"], conf.get("repo2-storage-port", "443")
    host = host if port == "443" else f"{host}:{port}"
    style = "path" if conf.get("repo2-s3-uri-style", "host") == "path" else "virtual"
    return {"endpoint": f"https://{host}", "addressing": style,
            "bucket": conf["repo2-s3-bucket"], "region": conf["repo2-s3-region"],
            "key": conf["repo2-s3-key"], "secret": conf["repo2-s3-key-secret"],
            "ca_file": conf.get("repo2-storage-ca-file")}  # fmt: skip


def s3_client(s3):
    """botocore's S3 client (Debian's python3-botocore, installed with a bucket) on the
    endpoint, addressing style and CA that pgBackRest uses."""
    import botocore.config
    import botocore.session

    return botocore.session.get_session().create_client(
        "s3", region_name=s3["region"], endpoint_url=s3["endpoint"],
        aws_access_key_id=s3["key"], aws_secret_access_key=s3["secret"],
        verify=s3.get("ca_file") or True,
        config=botocore.config.Config(
            s3={"addressing_style": s3["addressing"]}, retries={"max_attempts": 2},
            connect_timeout=10, read_timeout=20,
        ),
    )  # fmt: skip


def bucket_protection(s3):
    """(state, detail): how the bucket keeps an overwritten object. `versioned` and
    `object-lock` keep the old version; `unprotected` and `denied` are refused at deploy;
    `unreachable` is left to init, which reports an unreachable repository itself."""
    import botocore.exceptions

    client = s3_client(s3)
    try:
        versioning = client.get_bucket_versioning(Bucket=s3["bucket"])
    except botocore.exceptions.ClientError as error:
        code = error.response.get("Error", {}).get("Code")
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if status == 403:
            return "denied", (f"GetBucketVersioning refused ({code}): allow "
                              "s3:GetBucketVersioning and s3:GetBucketObjectLockConfiguration "
                              "on the bucket to the host's key")  # fmt: skip
        return "unreachable", f"GetBucketVersioning answered HTTP {status} ({code})"
    except botocore.exceptions.BotoCoreError as error:
        return "unreachable", str(error)
    if versioning.get("Status") == "Enabled":
        return "versioned", "versioning enabled"
    try:
        lock = client.get_object_lock_configuration(Bucket=s3["bucket"])
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError):
        lock = {}
    if lock.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") == "Enabled":
        return "object-lock", "Object Lock enabled"
    state = versioning.get("Status")
    return "unprotected", f"versioning {state or 'never enabled'}, no Object Lock"


def refusal(bucket_name, detail):
    return (
        f"refused: backup_s3_bucket `{bucket_name}`: {detail}. The host's key "
        "(BACKUP_S3_ACCESS_KEY_ID) may overwrite any object it can put, so without "
        "versioning an attacker on this host could replace the off-site history it cannot "
        f"delete. Turn on versioning (aws s3api put-bucket-versioning --bucket {bucket_name} "
        "--versioning-configuration Status=Enabled) or create the bucket with Object Lock "
        '(docs/vps.md, "Off-site copies").'
    )


def bucket_state(cfg):
    """{bucket, state, detail, refusal} of the off-site bucket, or None without one."""
    s3 = s3_settings(cfg.get("pgbackrest_config") or "/etc/pgbackrest.conf")
    if s3 is None:
        return None
    state, detail = bucket_protection(s3)
    refused = refusal(s3["bucket"], detail) if state in ("unprotected", "denied") else None
    return {"bucket": s3["bucket"], "state": state, "detail": detail, "refusal": refused}


def bucket(cfg):
    """Refuse (exit 1) an off-site bucket that keeps no overwritten object."""
    found = bucket_state(cfg)
    if found is None:
        log("no off-site repository: nothing to check")
        return
    log(f"bucket {found['bucket']}: {found['state']} ({found['detail']})")
    if found["refusal"]:
        raise SystemExit("prodstack-backup: " + found["refusal"])

def init(cfg):
    """Idempotent: a repository that has the stanza and a backup is left alone. A
    repository with another cluster's history stops it before anything is created (so a
    restore can rebuild repository 1 from it); one that cannot be read or reached is left
    out, the others are set up, and the exit status says what is missing. An off-site
    bucket without versioning or Object Lock is refused before anything is created."""
    bucket(cfg)
    states = repo_states(cfg)
    for repo, (state, detail) in sorted(states.items()):
        log(f"repository {repo}: {state} ({detail})")
    problems = {r: s for r, s in states.items() if s[0] not in ("ours", "empty")}
    report = [f"repository {r} " + WHY[s].format(detail=d, repo=r)
              for r, (s, d) in sorted(problems.items())]  # fmt: skip
    if any(s == "foreign" for s, _ in problems.values()):
        log("WARNING: " + "; ".join(report))
        write_state(cfg, states)
        return
    if 1 in problems:
        write_state(cfg, states)
        raise SystemExit("prodstack-backup: " + "; ".join(report))
    work = only_repo1(cfg) if problems else cfg
    if any(s == "empty" for r, (s, _) in states.items() if r not in problems):
        pgbackrest(work, "stanza-create")
    current = info(work)
    have = {b["database"]["repo-key"] for b in current["backup"]}
    empty = [r for r in range(1, work["repos"] + 1) if r not in have]
    if empty:
        log(f"repositories {empty} have no backup yet: a first full backup")
        backup(work, "full", empty)
    else:
        metrics(work, current)
    write_state(cfg, states)
    if problems:
        raise SystemExit("prodstack-backup: " + "; ".join(report))


def write_state(cfg, states):
    """What init found, per repository: the deploy reports it."""
    write_atomically(os.path.join(os.path.dirname(cfg["points_directory"]), "backup-state.json"),
                     json.dumps({str(r): s for r, s in states.items()}) + "\n")  # fmt: skip


def export(cfg, path):
    """A logical dump for moving data elsewhere; never the backup of record."""
    with common.replacing(path, 0o600, binary=True) as out:
        as_postgres("pg_dump", "-Fc", "-p", str(cfg["port"]), "-d", cfg["database"],
                    stdout=out, check=True)  # fmt: skip
    log(f"wrote {path} ({os.path.getsize(path)} bytes)")


def main():
    # systemd stops a unit with SIGTERM: unwind, so no temporary file stays behind.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("prodstack-backup: terminated"))
    args = sys.argv[1:]
    cfg = load()
    if len(args) == 1 and args[0] in TYPES:
        backup(cfg, args[0])
    elif args == ["init"]:
        init(cfg)
    elif args == ["verify"]:
        verify(cfg)
    elif args == ["bucket"]:
        bucket(cfg)
    elif args == ["bucket-state"]:
        print(json.dumps(bucket_state(cfg)))
    elif args == ["states"]:
        print(json.dumps({str(r): s for r, s in repo_states(cfg).items()}))
    elif args == ["metrics"]:
        metrics(cfg, info(cfg))
    elif len(args) == 2 and args[0] == "export":
        export(cfg, args[1])
    elif len(args) == 3 and args[0] == "counts" and args[2].isdigit():
        print(json.dumps(counts(cfg, args[1], int(args[2]))))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
