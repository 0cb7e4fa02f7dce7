"""Backups of record (pgBackRest), without a host: the settings they are built from, the
rendered configuration and units, and the restore targets the host script accepts.
The real thing runs in test_e2e_pitr.py."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import re
import shutil

import pytest
from tasks.config import SettingsError, settings_for
from tasks.templates import FILES, TEMPLATES

from tests.vps.test_templates import render

SINGLE = {"web", "db"}
S3 = {
    "backup_s3_bucket": "prodstack-backups",
    "backup_s3_endpoint_url": "https://s3.example.net:9000",
    "backup_s3_uri_style": "path",
}
BACKUP_UNITS = (
    "prodstack-backup-full.j2.service",
    "prodstack-backup-diff.j2.service",
    "prodstack-restore-drill.j2.service",
    "prodstack-backup-verify.j2.service",
    "prodstack-restore-drill-offsite.j2.service",
)


def conf(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line and line[0] != "#")


def test_both_repositories_are_encrypted_and_repo2_never_expires(data, environ):
    cfg = settings_for({**data, **S3, "backup_retention_days": 14}, SINGLE, environ=environ)
    settings = conf(render("pgbackrest.j2.conf", cfg))
    passphrase = environ["PRODSTACK_BACKUP_CIPHER_PASSPHRASE"]
    for repo in ("repo1", "repo2"):
        assert settings[f"{repo}-cipher-type"] == "aes-256-cbc"
        assert settings[f"{repo}-cipher-pass"] == passphrase
    # pgBackRest's own expire keeps the longest tier (the monthly copies, in days);
    # prodstack-backup's tier expiry trims to the daily window and the weekly copies.
    assert (settings["repo1-retention-full-type"], settings["repo1-retention-full"]) == (
        "time",
        str(cfg.backup_monthly_retention_days),
    )
    # The host's S3 key cannot delete: expire must never try on repo2 (the bucket's
    # lifecycle rules do retention there). 9999999 is pgBackRest's highest count.
    assert (settings["repo2-retention-full-type"], settings["repo2-retention-full"]) == (
        "count",
        "9999999",
    )
    assert "repo2-retention-archive" not in settings
    assert settings["repo2-s3-endpoint"] == "s3.example.net"
    assert settings["repo2-storage-port"] == "9000"
    assert settings["repo2-s3-uri-style"] == "path"
    assert "repo2-storage-verify-tls" not in settings  # certificates are always checked


def test_wal_is_pushed_asynchronously_with_a_queue_limit_from_the_disk(data, environ):
    from tasks.backup import archive_queue_max_mb

    cfg = settings_for({**data, **S3}, SINGLE, environ=environ)
    settings = conf(render("pgbackrest.j2.conf", cfg, archive_queue_max_mb=2560))
    # An S3 outage must not hold PostgreSQL's archiver: async, spooled, and dropped past the
    # limit rather than filling the disk.
    assert settings["archive-async"] == "y"
    assert settings["spool-path"] == "/var/spool/pgbackrest"
    assert settings["archive-push-queue-max"] == "2560MiB"
    assert (archive_queue_max_mb(25600), archive_queue_max_mb(4096)) == (2560, 1024)


def test_without_a_bucket_there_is_only_the_local_repository(data, environ):
    settings = conf(render("pgbackrest.j2.conf", settings_for(data, SINGLE, environ=environ)))
    assert not [k for k in settings if k.startswith("repo2")]
    assert settings["repo1-cipher-type"] == "aes-256-cbc"


def test_wal_is_archived_continuously_with_the_timeout_from_data(data, environ):
    cfg = settings_for({**data, "backup_archive_timeout_seconds": 30}, SINGLE, environ=environ)
    settings = {
        k.strip(): v.strip()
        for k, v in (
            line.split("=", 1)
            for line in render("postgresql.j2.conf", cfg).splitlines()
            if "=" in line and not line.startswith("#")
        )
    }
    assert settings["archive_mode"] == "on"
    assert settings["archive_command"] == "'pgbackrest --stanza=prodstack archive-push %p'"
    assert settings["archive_timeout"] == "30"
    assert settings_for(data, SINGLE, environ=environ).backup_archive_timeout_seconds == 60


@pytest.mark.parametrize("unit", BACKUP_UNITS)
def test_backup_units_time_out_and_raise_an_alert_on_failure(data, environ, unit):
    text = render(unit, settings_for(data, SINGLE, environ=environ))
    assert "OnFailure=prodstack-alert@%n.service" in text.splitlines()
    timeout = re.search(r"^TimeoutStartSec=(\d+)(h|min|s)$", text, re.M)
    assert timeout, "a hung backup must end as a failure"
    assert "infinity" not in text


def test_timers_follow_the_calendar_keys(data, environ):
    cfg = settings_for({**data, "backup_full_calendar": "Sat *-*-* 03:00:00"}, SINGLE,
                       environ=environ)  # fmt: skip
    assert "OnCalendar=Sat *-*-* 03:00:00" in render("prodstack-backup-full.j2.timer", cfg)
    assert "OnCalendar=Mon..Sat *-*-* 02:00:00" in render("prodstack-backup-diff.j2.timer", cfg)
    assert "OnCalendar=*-*-* 04:30:00" in render("prodstack-restore-drill.j2.timer", cfg)
    offsite = render("prodstack-restore-drill-offsite.j2.timer", cfg)
    assert "OnCalendar=Sun *-*-* 08:00:00" in offsite


def test_the_plaintext_offsite_path_is_gone():
    """Dumps are never uploaded in plaintext: off-site copies go only through pgBackRest's
    encrypted repository 2, and only its configuration holds the S3 key (a key that cannot
    delete, docs/vps.md "Off-site copies: a key that cannot delete")."""
    for path in [*FILES.iterdir(), *TEMPLATES.iterdir()]:
        text = path.read_text()
        assert "boto3" not in text, path.name
        assert "AWS_SECRET_ACCESS_KEY" not in text, path.name
        if path.suffix in (".service", ".timer"):
            assert "pg_dump" not in text and " export" not in text, path.name
    holders = [p.name for p in TEMPLATES.iterdir() if "BACKUP_S3_SECRET" in p.read_text()]
    assert holders == ["pgbackrest.j2.conf"]


def test_the_passphrase_is_required_on_a_db_host_only(data, environ, tmp_path):
    del environ["PRODSTACK_BACKUP_CIPHER_PASSPHRASE"]
    data["secrets_file"] = str(tmp_path / "absent.env")
    with pytest.raises(SettingsError, match="missing secret `BACKUP_CIPHER_PASSPHRASE`"):
        settings_for({**data, **S3}, SINGLE, environ=environ)
    db = {**data, "private_address": "10.0.0.20", "db_client_cidrs": ["10.0.0.10/32"]}
    web = settings_for({**data, "private_address": "10.0.0.10"}, {"web"}, db_data=db,
                       environ=environ)  # fmt: skip
    assert "BACKUP_CIPHER_PASSPHRASE" not in web.secrets


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ({"backup_s3_endpoint_url": "http://minio.example.net:9000"}, "`backup_s3_endpoint_url`"),
        ({"backup_s3_endpoint_url": "https://s3.example.net/bucket"}, "`backup_s3_endpoint_url`"),
        ({"backup_s3_endpoint_url": "https://s3.example.net:port"}, "`backup_s3_endpoint_url`"),
        ({"backup_s3_uri_style": "virtual"}, "`backup_s3_uri_style`"),
        ({"backup_s3_ca_file": "/nonexistent/ca.pem"}, "`backup_s3_ca_file`"),
        ({"backup_s3_bucket": "Bad_Bucket"}, "`backup_s3_bucket`"),
        ({"backup_s3_prefix": "a b"}, "`backup_s3_prefix`"),
        ({"backup_archive_timeout_seconds": -1}, "`backup_archive_timeout_seconds`"),
        ({"backup_full_calendar": "daily\nExecStart=/bin/sh"}, "`backup_full_calendar`"),
        ({"backup_drill_calendar": ""}, "`backup_drill_calendar`"),
    ],
)
def test_invalid_backup_data_fails_naming_the_key(data, environ, override, key):
    with pytest.raises(SettingsError) as error:
        settings_for({**data, **S3, **override}, SINGLE, environ=environ)
    assert key in str(error.value)


def host_script(name: str):
    loader = importlib.machinery.SourceFileLoader(name.replace("-", "_"), str(FILES / name))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("target", "options"),
    [
        ("latest", ["--type=default"]),
        ("20261201-020003F", ["--set=20261201-020003F", "--type=immediate",
                              "--target-action=promote"]),
        ("20261201-020003F_20261202-020004D",
         ["--set=20261201-020003F_20261202-020004D", "--type=immediate",
          "--target-action=promote"]),
        ("2026-12-01T10:15:00Z", ["--type=time", "--target=2026-12-01 10:15:00.000000+00",
                                  "--target-action=promote"]),
        ("2026-12-01T12:15:00.5+02:00",
         ["--type=time", "--target=2026-12-01 10:15:00.500000+00", "--target-action=promote"]),
    ],
)  # fmt: skip
def test_restore_targets_map_to_pgbackrest_options(target, options):
    assert host_script("prodstack-restore").parse_target(target) == options


@pytest.mark.parametrize("target", ["yesterday", "2026-12-01T10:15:00", "20261201", ""])
def test_a_bad_restore_target_is_refused_before_anything_stops(target):
    with pytest.raises(SystemExit, match="not `latest`, a backup label"):
        host_script("prodstack-restore").parse_target(target)


def test_the_drill_refuses_a_restore_that_would_eat_the_live_databases_reserve():
    drill = host_script("prodstack-restore-drill")
    gib = 1024**3
    usage = shutil._ntuple_diskusage(total=100 * gib, used=80 * gib, free=20 * gib)
    assert drill.space_problem(5 * gib, usage) is None
    # 20 GiB free, a 15 GiB backup: 5 GiB would be left, under the 10 GiB reserve.
    problem = drill.space_problem(15 * gib, usage)
    assert "15360 MiB" in problem and "20480 MiB are free" in problem
    assert drill.space_problem(25 * gib, usage)


def test_a_host_without_a_bucket_is_warned_that_its_backups_share_its_disk(data, environ):
    from tasks.backup import offsite_warning

    assert "NO OFF-SITE BACKUPS" in offsite_warning(settings_for(data, SINGLE, environ=environ))
    assert offsite_warning(settings_for({**data, **S3}, SINGLE, environ=environ)) is None


VERIFY_CORRUPT = """\
2026-12-07 06:28:51.479 P00   INFO: verify command begin 2.45: --repo=2 --stanza=prodstack
2026-12-07 06:28:51.820 P01   INFO: invalid checksum '20261207-061644F/pg_data/base/5/2838.gz'
2026-12-07 06:28:51.828 P00   INFO: stanza: prodstack
                                    status: error
                                      backup: 20261207-061644F, status: invalid, \
total files checked: 964, total valid files: 963
                                        checksum invalid: 1
2026-12-07 06:28:51.828 P00   INFO: verify command end: completed successfully (351ms)
"""
VERIFY_SOUND = """\
2026-12-07 06:28:54.422 P00   INFO: verify command begin 2.45: --repo=2 --stanza=prodstack
2026-12-07 06:28:54.914 P00   INFO: verify command end: completed successfully (494ms)
"""


def test_verify_fails_on_invalid_files_although_pgbackrest_exits_0():
    """pgBackRest 2.45's own answers (recorded against a repository with one corrupted
    file, and a sound one): it exits 0 in both, and only its summary tells them apart."""
    backup = host_script("prodstack-backup")
    assert backup.verify_problem(0, VERIFY_SOUND) is None
    problem = backup.verify_problem(0, VERIFY_CORRUPT)
    assert "invalid checksum '20261207-061644F/pg_data/base/5/2838.gz'" in problem
    assert "checksum invalid: 1" in problem
    assert backup.verify_problem(56, "ERROR: [056]: unable to open") is not None
