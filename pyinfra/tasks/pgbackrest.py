"""Backups of record with pgBackRest: continuous WAL archiving (set in postgresql.conf by
tasks/postgres.py), a weekly full and daily differentials into an encrypted local
repository and, with `backup_s3_bucket`, an encrypted off-site one; a daily restore drill.

The scripts live on the host (prodstack-backup, prodstack-restore and
prodstack-restore-drill, from prodstack/host/; tasks/host_tools.py installs them) so the
timers and an operator run the same code.
"""

from __future__ import annotations

import hashlib
import json

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.files import File
from pyinfra.operations import files, python, server, systemd

from tasks.config import Settings, SettingsError
from tasks.facts import DiskSizeMb, OffsiteBucket, PgbackrestCipherDigest, PgbackrestRepos
from tasks.postgres import postgres_version
from tasks.prometheus import TEXTFILE_DIR
from tasks.templates import banner, template, timers

STANZA = "prodstack"
STATE = "/var/lib/prodstack/backup-state.json"
UNITS = (
    "prodstack-backup-full.service",
    "prodstack-backup-full.timer",
    "prodstack-backup-diff.service",
    "prodstack-backup-diff.timer",
    "prodstack-restore-drill.service",
    "prodstack-restore-drill.timer",
    "prodstack-backup-verify.service",
    "prodstack-backup-verify.timer",
)
# With a bucket: the off-site repository's own restore drill, weekly.
OFFSITE_UNITS = ("prodstack-restore-drill-offsite.service", "prodstack-restore-drill-offsite.timer")
# The sandbox drop-in of every unit above: by systemd's prefix drop-ins,
# prodstack-backup-.service.d/ applies to every prodstack-backup-*.service.
SANDBOXED = {
    "prodstack-backup-.service": "prodstack-backup-*.service",
    "prodstack-restore-drill.service": "prodstack-restore-drill.service",
    "prodstack-restore-drill-offsite.service": "prodstack-restore-drill-offsite.service",
}
# The plaintext pg_dump rotation these units ran is gone; pgBackRest replaces it.
RETIRED_UNITS = (
    "prodstack-backup.timer",
    "prodstack-backup.service",
    "prodstack-backup-hourly.timer",
    "prodstack-backup-hourly.service",
)


def stanza_work(cfg: Settings) -> tuple[bool, bool]:
    """(create the stanza, take a first full backup): some repository lacks either."""
    repos = host.get_fact(PgbackrestRepos, stanza=STANZA) or {}
    wanted = range(1, (2 if cfg.backup_s3_bucket else 1) + 1)
    # pgBackRest's status codes: 0 ok, 2 stanza present but no valid backup yet.
    create = any(repos.get(r, (None, 0))[0] not in (0, 2) for r in wanted)
    first = any(repos.get(r, (None, 0))[1] == 0 for r in wanted)
    return create, first


def archive_queue_max_mb(disk_mb: int) -> int:
    """pgBackRest's archive-push-queue-max: 10% of the database's disk, at least 1 GiB."""
    return max(1024, disk_mb // 10)


def offsite_warning(cfg: Settings) -> str | None:
    if cfg.backup_s3_bucket:
        return None
    return (
        "NO OFF-SITE BACKUPS: `backup_s3_bucket` is not set, so every backup and all archived "
        "WAL stay on this host's own disk: losing the disk loses the database and its "
        "backups together. Set backup_s3_bucket (docs/vps.md, 'Off-site copies')."
    )


def passphrase_changed(cfg: Settings) -> bool:
    """Whether /etc/pgbackrest.conf holds another passphrase than the secrets (compared
    as SHA-256 digests: the passphrase itself never leaves the host as a fact)."""
    digest = host.get_fact(PgbackrestCipherDigest)
    wanted = hashlib.sha256(cfg.secrets["BACKUP_CIPHER_PASSPHRASE"].encode()).hexdigest()
    return bool(digest) and digest != wanted


def bucket_refusal(cfg: Settings) -> None:
    """Refuse, before any change, an off-site bucket the host's key could overwrite (its
    key can put but not delete). The host asks the S3 API itself: the endpoint may be one
    only it reaches. A host without the off-site repository yet is checked by
    `prodstack-backup init`, which refuses the same way before it creates anything."""
    if not cfg.backup_s3_bucket:
        return
    found = host.get_fact(OffsiteBucket)
    if found and found.get("bucket") == cfg.backup_s3_bucket and found.get("refusal"):
        raise SettingsError(found["refusal"])
    if found and found.get("state") == "unreachable":
        banner(f"could not ask S3 whether bucket {cfg.backup_s3_bucket} is versioned: "
               f"{found.get('detail')}")  # fmt: skip


@deploy("Backups")
def backup(cfg: Settings) -> None:
    version = postgres_version(cfg)
    warning = offsite_warning(cfg)
    if warning:
        banner(warning)
    if passphrase_changed(cfg):
        # Refused before any change: with a new passphrase in pgbackrest.conf, WAL archiving
        # and every backup fail at once, and pgBackRest cannot re-encrypt a repository.
        raise SettingsError(
            "secret `BACKUP_CIPHER_PASSPHRASE` differs from the passphrase this host's "
            "pgBackRest repositories are encrypted with (/etc/pgbackrest.conf): a repository "
            "keeps the passphrase it was created with; put the old one back in the secrets "
            '(docs/vps.md, "Backup and restore")'
        )
    bucket_refusal(cfg)
    retired = [u for u in RETIRED_UNITS if host.get_fact(File, path=f"/etc/systemd/system/{u}")]
    if retired:
        server.shell(
            name="Retire the pg_dump backup units (pgBackRest replaces them)",
            commands=[f"systemctl disable --now {' '.join(retired)}",
                      "rm -f " + " ".join(f"/etc/systemd/system/{u}" for u in retired),
                      "rm -f /etc/prodstack/backup.env",
                      "systemctl daemon-reload"],
        )  # fmt: skip
    queue_mb = archive_queue_max_mb(host.get_fact(DiskSizeMb, path="/var/lib") or 10240)
    conf = template(
        name="pgBackRest settings (0640 root:postgres: passphrase and S3 key)",
        src="pgbackrest.j2.conf",
        secret=True,
        dest="/etc/pgbackrest.conf",
        mode="640",
        group="postgres",
        cfg=cfg,
        version=version,
        archive_queue_max_mb=queue_mb,
    )
    if cfg.backup_s3_ca_file:
        files.directory(name="pgBackRest directory", path="/etc/pgbackrest", mode="755")
        files.put(
            name="CA of the S3 endpoint's certificate",
            src=cfg.backup_s3_ca_file,
            dest="/etc/pgbackrest/s3-ca.pem",
            mode="644",
        )
    template(
        name="Backup, restore and drill settings",
        src="backup.j2.json",
        dest="/etc/prodstack/backup.json",
        mode="644",
        cfg=cfg,
        version=version,
    )
    files.directory(
        name="Backup points (row counts the drill checks against)",
        path="/var/lib/prodstack/backup-points",
        mode="700",
    )
    sandbox = [
        template(
            name=f"Sandbox for {units}",
            src="backup-sandbox.j2.conf",
            dest=f"/etc/systemd/system/{unit}.d/prodstack-sandbox.conf",
            units=units,
            drill=unit.startswith("prodstack-restore-drill"),
            textfile_dir=TEXTFILE_DIR,
        )
        for unit, units in SANDBOXED.items()
    ]
    systemd.daemon_reload(
        name="Reload systemd units (backup sandbox)",
        _if=lambda: any(op.did_change() for op in sandbox),
    )
    timers(cfg, UNITS + (OFFSITE_UNITS if cfg.backup_s3_bucket else ()), label="backups")
    return conf, queue_mb


def report_states() -> None:
    """After `prodstack-backup init`: say loudly which repository it could not use."""
    _, output = host.run_shell_command(f"cat {STATE}", _sudo=bool(host.data.get("_sudo")))
    try:
        states = json.loads(output.stdout or "{}")
    except ValueError:
        return
    for repo, (state, detail) in sorted(states.items()):
        if state == "foreign":
            banner(
                f"repository {repo} holds another cluster's backups "
                f"({detail}): no stanza was created, and WAL is not archived until you "
                "restore. If this host replaces a lost one: pyinfra inventory.py restore.py "
                f"--data restore_to=latest --data restore_repo={repo} --data confirm=yes "
                '(docs/vps.md, "Disaster recovery runbook"). If not, give this host its '
                "own backup_s3_prefix."
            )


def backup_finish(cfg: Settings, backup_ops) -> None:
    """The stanza and first backups, last in the deploy: a repository that cannot be used
    (an S3 outage, another cluster's history in the bucket, a passphrase that does not
    decrypt it) fails or warns here, after the API, nginx and monitoring are in place."""
    conf, queue_mb = backup_ops
    # Here, not with the settings: the textfile directory is made by tasks/prometheus.py.
    template(
        name="The archive queue's limit, for WalArchiveQueueGrowing",
        src="prodstack-archive-queue.j2.prom",
        dest=f"{TEXTFILE_DIR}/prodstack_archive_queue.prom",
        archive_queue_max_mb=queue_mb,
    )
    # Facts tell a fresh host (or a new repository) apart; a changed pgbackrest.conf may
    # point at a new, empty repository the facts could not see.
    create, first = stanza_work(cfg)
    init = server.shell(
        name="pgBackRest stanza and a first full backup in every repository without one",
        commands=["/usr/local/sbin/prodstack-backup init"],
        _if=lambda: create or first or conf.did_change(),
    )
    python.call(
        name="Report repositories the backups cannot use",
        function=report_states,
        _if=init.did_change,
    )
