"""End to end: pgBackRest point-in-time recovery, off-site restore and the restore drill.

Runs on the session's shared host (conftest.py's `stack`), after test_e2e.py, with moto's
S3 server over TLS as repository 2. The deploy archived WAL from the start and took a
first full backup into both repositories. Tests run in order and share what they noted
(the time T and the rows at T). The host is left deployed and serving.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from pathlib import Path

import pytest

from tests.vps.e2e import grand_total, prometheus

pytestmark = [pytest.mark.docker, pytest.mark.e2e, pytest.mark.timeout(1500)]

METRICS = "/var/lib/prometheus/node-exporter"
REPO1 = "/var/lib/pgbackrest"
SCRATCH = "/var/lib/postgresql/prodstack-restore-drill"
noted: dict = {}


def info(stack) -> dict:
    out = stack.host.run(
        "runuser -u postgres -- pgbackrest --stanza=prodstack --output=json info"
    ).stdout
    return json.loads(out)[0]


def alert_ids(stack) -> set[str]:
    return set(stack.psql("select id from alerts").split())


def create_alerts(stack, n: int, message: str) -> set[str]:
    ids = set()
    with stack.client() as c:
        for _ in range(n):
            r = c.post(
                "/api/v1/alerts",
                json={"message": message, "type": "pitr", "priority": "low", "region": "eu"},
            )
            assert r.status_code == 201, r.text
            ids.add(r.json()["id"])
    return ids


def start_unit(stack, unit: str):
    """Start a oneshot unit; (exit status of systemctl, the unit's main exit status)."""
    started = stack.host.run(f"systemctl start {unit}", check=False, timeout=900)
    show = stack.host.run(f"systemctl show -p LoadState -p ExecMainStatus {unit}").stdout
    props = dict(line.split("=", 1) for line in show.split())
    assert props["LoadState"] == "loaded", show
    return started.returncode, int(props["ExecMainStatus"])


def prom(stack, name: str) -> dict[str, float]:
    values = {}
    for line in stack.host.run(f"cat {METRICS}/{name}").stdout.splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            values[key] = float(value)
    return values


def wait_scraped(stack, query: str, timeout: float = 90) -> None:
    """Wait until Prometheus answers `query` with a sample (the textfile was scraped)."""
    deadline = time.monotonic() + timeout
    while not prometheus(stack, "/api/v1/query", query=query)["result"]:
        assert time.monotonic() < deadline, f"Prometheus never saw {query}"
        time.sleep(3)


def backup_alerts(stack) -> list[dict]:
    """BackupTooOld and RestoreDrillFailed alerts Prometheus holds, pending or firing."""
    query = 'ALERTS{alertname=~"BackupTooOld|RestoreDrillFailed"}'
    return [r["metric"] for r in prometheus(stack, "/api/v1/query", query=query)["result"]]


def test_wal_is_archived_into_two_encrypted_repositories(stack, moto):
    assert stack.psql("show archive_mode") == "on"
    assert stack.psql("show archive_timeout") == "1min"
    assert "pgbackrest" in stack.psql("show archive_command")
    state = info(stack)
    assert {r["key"]: r["cipher"] for r in state["repo"]} == {1: "aes-256-cbc", 2: "aes-256-cbc"}
    assert {b["database"]["repo-key"] for b in state["backup"] if b["type"] == "full"} == {1, 2}
    # Off-site objects are ciphertext (OpenSSL's salted format), not a readable dump.
    keys = [o["Key"] for o in moto.s3.list_objects_v2(Bucket="prodstack-backups")["Contents"]]
    assert any(k.startswith("prodstack/archive/prodstack/") for k in keys)
    for key in [k for k in keys if k.endswith(("backup.info", ".zst"))][:5]:
        body = moto.s3.get_object(Bucket="prodstack-backups", Key=key)["Body"].read()
        assert body.startswith(b"Salted__"), key
    # Backups and WAL pushes delete nothing but pgBackRest's `latest` marker, the one key
    # the host's policy may delete (docs/vps.md, "Off-site copies").
    deleted = set(re.findall(r'"DELETE /prodstack-backups/(\S+) HTTP', moto.log.read_text()))
    assert deleted <= {"prodstack/backup/prodstack/latest"}
    # The passphrase and S3 key stay in the 0640 config: not in the journal or the deploy log.
    assert stack.host.run("stat -c '%a %U:%G' /etc/pgbackrest.conf").stdout.split() == [
        "640", "root:postgres"]  # fmt: skip
    journal = stack.host.run("journalctl --no-pager -o cat").stdout
    for secret in ("BACKUP_CIPHER_PASSPHRASE", "BACKUP_S3_SECRET_ACCESS_KEY"):
        assert stack.secrets[secret] not in journal
        assert stack.secrets[secret] not in stack.first.stdout
    # The plaintext dump rotation is gone.
    assert stack.host.run("ls /etc/systemd/system/prodstack-backup.timer", check=False).returncode
    metrics = prom(stack, "prodstack_backup.prom")
    assert (
        metrics['prodstack_backup_last_success_timestamp_seconds{type="full"}'] > time.time() - 3600
    )
    firsts = [b["timestamp"]["stop"] - b["timestamp"]["start"] for b in state["backup"]]
    print(f"first deploy's full backups (repository 1, 2): {firsts} s")


def test_restore_refuses_without_confirm(stack):
    before = alert_ids(stack)
    result = stack.pyinfra("restore.py", restore_to="latest")
    assert result.returncode != 0
    assert "confirm: None is invalid" in result.stdout
    result = stack.pyinfra("restore.py", restore_to="yesterday", confirm="yes")
    assert result.returncode != 0 and "restore_to: 'yesterday' is invalid" in result.stdout
    assert alert_ids(stack) == before


def test_point_in_time_restore_brings_back_exactly_the_state_at_t(stack):
    kept = create_alerts(stack, 3, "before T")
    at_t = alert_ids(stack)
    time.sleep(1)
    t = stack.host.run("date -u +%Y-%m-%dT%H:%M:%S.%6NZ").stdout.strip()
    time.sleep(1)
    stack.psql("delete from alerts where message = 'before T'")
    later = create_alerts(stack, 2, "after T")

    # RPO: how long a committed write waits until it is in both repositories (the
    # archive_timeout bounds it while writes are rare; busy hosts fill segments sooner).
    segment = stack.psql("select pg_walfile_name(pg_current_wal_lsn())")
    written = time.monotonic()
    while stack.psql("select coalesce(last_archived_wal, '') from pg_stat_archiver") < segment:
        # archive_timeout (60 s) bounds it on an idle host; the bound here leaves room for a
        # loaded CI machine, where three test workers share two cores with the host.
        assert time.monotonic() - written < 300, (
            f"WAL segment {segment} was not archived within 5 minutes; pg_stat_archiver: "
            + stack.psql("select row_to_json(a) from pg_stat_archiver a")
        )
        time.sleep(1)
    rpo = time.monotonic() - written

    started = time.monotonic()
    result = stack.pyinfra("restore.py", restore_to=t, confirm="yes")
    rto = time.monotonic() - started
    assert result.returncode == 0, result.stdout[-5000:]
    ids = alert_ids(stack)
    assert kept <= ids and not later & ids
    assert ids == at_t
    assert stack.version()  # the replicas serve again, through nginx
    print(
        f"PITR: RPO (write to archived in both repositories) {rpo:.0f} s; "
        f"RTO (restore.py: replicas stopped, restore, migrate, replicas serving) {rto:.0f} s"
    )
    noted.update(t=t, at_t=at_t)


def test_off_site_restore_with_the_local_repository_deleted(stack, moto):
    assert noted, "needs the PITR test's time T"
    create_alerts(stack, 2, "after the first restore")
    stack.host.run(f"rm -rf {REPO1}/*")
    started = time.monotonic()
    result = stack.pyinfra("restore.py", restore_to=noted["t"], restore_repo=2, confirm="yes")
    rto = time.monotonic() - started
    assert result.returncode == 0, result.stdout[-5000:]
    assert alert_ids(stack) == noted["at_t"]
    assert stack.version()
    # Repository 1 is rebuilt: a stanza and a full backup again.
    assert 1 in {b["database"]["repo-key"] for b in info(stack)["backup"]}
    print(f"off-site PITR from repository 2 (local repository gone): RTO {rto:.0f} s")


def test_restore_drill_passes_and_exports_its_metrics(stack):
    create_alerts(stack, 4, "drill " + uuid.uuid4().hex)
    assert start_unit(stack, "prodstack-backup-diff.service") == (0, 0)
    replicas = stack.host.run("docker ps -q --filter label=prodstack.role=api | sort").stdout
    assert start_unit(stack, "prodstack-restore-drill.service") == (0, 0)
    metrics = prom(stack, "prodstack_restore_drill.prom")
    assert metrics["prodstack_restore_drill_success"] == 1
    assert metrics["prodstack_restore_drill_last_success_timestamp_seconds"] > time.time() - 600
    journal = stack.host.run("journalctl -u prodstack-restore-drill -o cat --no-pager").stdout
    assert "with the recorded row counts" in journal
    assert stack.host.run(f"test -e {SCRATCH}", check=False).returncode
    assert (
        stack.host.run("docker ps -q --filter label=prodstack.role=api | sort").stdout == replicas
    )
    print(f"restore drill: {metrics['prodstack_restore_drill_duration_seconds']:.0f} s")
    # Prometheus has this drill's result and the backups' age: neither alert is pending.
    stamp = int(metrics["prodstack_restore_drill_last_success_timestamp_seconds"])
    wait_scraped(stack, f"prodstack_restore_drill_last_success_timestamp_seconds >= {stamp}")
    wait_scraped(stack, "prodstack_backup_last_success_timestamp_seconds")
    assert backup_alerts(stack) == []


# Table names the app role may choose: a quote, a semicolon, a newline, 63 bytes, and the
# review's payload, which closes a string literal and runs a program as the server's OS user.
MARKER = "/var/lib/postgresql/x"
HOSTILE = (
    f"a',1));COPY(SELECT 1)TO PROGRAM'id>{MARKER}';--",
    "it's",
    "semi;colon",
    "new\nline",
    "'\";" * 21,
)


def as_app(stack, sql: str) -> str:
    """SQL as the app's owner role (its migrations' role), which owns what it creates."""
    return stack.host.run(
        "runuser -u postgres -- psql -XAtq -v ON_ERROR_STOP=1 -d prodstack",
        input=f"SET ROLE prodstack;\n{sql}\n",
    ).stdout.strip()


def newest_point(stack) -> dict:
    name = stack.host.run("ls -t /var/lib/prodstack/backup-points | head -1").stdout.strip()
    return json.loads(stack.host.run(f"cat /var/lib/prodstack/backup-points/{name}").stdout)


def test_hostile_table_names_are_backed_up_and_drilled_and_run_nothing(stack):
    assert all(len(n.encode()) <= 63 for n in HOSTILE)
    assert stack.host.run(f"test -e {MARKER}", check=False).returncode
    quoted = ['"' + n.replace('"', '""') + '"' for n in HOSTILE]
    try:
        # The payload alone first (as the review reproduced it), then every name at once.
        for n, t in enumerate(quoted):
            rows = f"SELECT generate_series(1, {n + 2})"
            as_app(stack, f"CREATE TABLE public.{t} (id int); INSERT INTO public.{t} {rows};")
            if n == 0 or n == len(quoted) - 1:
                backed_up = start_unit(stack, "prodstack-backup-diff.service")
                ran = stack.host.run(f"cat {MARKER}", check=False)
                assert ran.returncode, f"a table name ran `id` during the backup: {ran.stdout}"
                assert backed_up == (0, 0)
        point = newest_point(stack)
        # The live counts, built on the server as well (the names are hostile here too).
        live = json.loads(
            as_app(
                stack,
                """
            SELECT json_object_agg(format('%I.%I', schemaname, tablename),
                   (xpath('/row/c/text()', query_to_xml(format(
                       'SELECT count(*) AS c FROM %I.%I', schemaname, tablename),
                       false, true, '')))[1]::text::int)
              FROM pg_tables WHERE schemaname = 'public'""",
            )
        )
        assert point["counts"] == live
        assert sorted(point["counts"][f"public.{t}"] for t in quoted) == list(
            range(2, len(HOSTILE) + 2)
        )
        journal = stack.host.run("journalctl -u prodstack-backup-diff -o cat --no-pager").stdout
        freeze = re.findall(r"writes waited (\d+) ms for the locks, which were held (\d+) ms",
                            journal)  # fmt: skip
        assert freeze, journal[-3000:]
        assert start_unit(stack, "prodstack-restore-drill.service") == (0, 0)
        drill = stack.host.run("journalctl -u prodstack-restore-drill -o cat --no-pager").stdout
        assert f"ok: {len(live)} tables with the recorded row counts" in drill
        assert stack.host.run(f"test -e {MARKER}", check=False).returncode
        print(f"backup point freeze (lock wait ms, held ms): {freeze[-1]}")
    finally:
        as_app(stack, "".join(f"DROP TABLE IF EXISTS public.{t};" for t in quoted))


def test_weekly_verify_reads_back_the_offsite_repository_and_fails_on_a_damaged_file(stack, moto):
    assert start_unit(stack, "prodstack-backup-verify.service") == (0, 0)
    assert prom(stack, "prodstack_backup_verify.prom")[
        'prodstack_backup_verify_success{repo="2"}'] == 1  # fmt: skip
    # The biggest backup file in the bucket, damaged in place (as a bad disk or a bad
    # overwrite would leave it): pgBackRest 2.45 still exits 0, the script must not.
    listed = moto.s3.list_objects_v2(Bucket="prodstack-backups", Prefix="prodstack/backup/")
    objects = listed["Contents"]
    key = max((o for o in objects if "/pg_data/" in o["Key"]), key=lambda o: o["Size"])["Key"]
    body = moto.s3.get_object(Bucket="prodstack-backups", Key=key)["Body"].read()
    damaged = body[:100] + bytes(b ^ 0xFF for b in body[100:164]) + body[164:]
    moto.s3.put_object(Bucket="prodstack-backups", Key=key, Body=damaged)
    try:
        assert start_unit(stack, "prodstack-backup-verify.service")[1] != 0
        assert prom(stack, "prodstack_backup_verify.prom")[
            'prodstack_backup_verify_success{repo="2"}'] == 0  # fmt: skip
        journal = stack.host.run("journalctl -u prodstack-backup-verify -o cat --no-pager").stdout
        assert "found invalid files" in journal and key.split("/prodstack/")[-1] in journal
    finally:
        moto.s3.put_object(Bucket="prodstack-backups", Key=key, Body=body)
    assert start_unit(stack, "prodstack-backup-verify.service") == (0, 0)


def test_drill_fails_on_a_corrupted_backup_and_the_live_database_is_untouched(stack, alert_webhook):
    label = max((b for b in info(stack)["backup"] if b["database"]["repo-key"] == 1),
                key=lambda b: b["timestamp"]["stop"])["label"]  # fmt: skip
    full = label.split("_")[0]
    # The biggest file of the full backup the latest builds on, in every backup holding it.
    relative = stack.host.run(
        f"cd {REPO1}/backup/prodstack/{full} && find pg_data/base -type f -printf '%s %p\\n' "
        "| sort -n | tail -1 | cut -d' ' -f2"
    ).stdout.strip()
    assert relative
    victims = [f"{REPO1}/backup/prodstack/{b}/{relative}" for b in {full, label}]
    live = (
        stack.psql("select count(*) from alerts"),
        stack.psql("select pg_postmaster_start_time()"),
    )
    for n, victim in enumerate(victims):
        corrupt = f"dd if=/dev/urandom of={victim} bs=1 count=64 seek=100 conv=notrunc"
        keep = f"cp -p {victim} /root/victim{n}.bak"
        stack.host.run(f"[ ! -e {victim} ] || {{ {keep} && {corrupt}; }}")
    since = time.time()
    try:
        assert start_unit(stack, "prodstack-restore-drill.service")[1] != 0
        metrics = prom(stack, "prodstack_restore_drill.prom")
        assert metrics["prodstack_restore_drill_success"] == 0
        assert "prodstack_restore_drill_last_success_timestamp_seconds" in metrics
        on_failure = stack.host.run("systemctl show -p OnFailure prodstack-restore-drill").stdout
        assert "prodstack-alert@prodstack-restore-drill.service.service" in on_failure
        assert stack.host.run(f"test -e {SCRATCH}", check=False).returncode
        # The failed drill pages: RestoreDrillFailed reaches the session's webhook receiver.
        alert_webhook.wait_for("RestoreDrillFailed", "firing", since, timeout=120, drill="failed")
    finally:
        for n, victim in enumerate(victims):
            stack.host.run(f"[ ! -e /root/victim{n}.bak ] || mv /root/victim{n}.bak {victim}")
    # With the files back the drill passes again, so the alert clears for what runs next.
    assert start_unit(stack, "prodstack-restore-drill.service") == (0, 0)
    assert (stack.psql("select count(*) from alerts"),
            stack.psql("select pg_postmaster_start_time()")) == live  # fmt: skip
    assert stack.version()


def test_a_changed_passphrase_is_refused_before_any_change(stack):
    conf = stack.host.run("sha256sum /etc/pgbackrest.conf").stdout
    secrets = stack.workdir / "changed-passphrase.env"
    text = Path(stack.data["secrets_file"]).read_text()
    old = stack.secrets["BACKUP_CIPHER_PASSPHRASE"]
    secrets.write_text(text.replace(old, old + "-changed"))
    secrets.chmod(0o600)
    result = stack.pyinfra(secrets_file=str(secrets))
    assert result.returncode != 0
    assert "`BACKUP_CIPHER_PASSPHRASE` differs from the passphrase" in result.stdout
    assert old not in result.stdout
    assert stack.host.run("sha256sum /etc/pgbackrest.conf").stdout == conf
    assert stack.version()


def test_second_deploy_after_backups_and_restores_changes_nothing(stack):
    result = stack.pyinfra()
    assert result.returncode == 0, result.stdout[-3000:]
    _, changed, errors = grand_total(result.stdout)
    assert (changed, errors) == ("-", "-"), result.stdout[-6000:]
