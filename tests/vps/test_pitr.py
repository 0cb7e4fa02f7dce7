"""Backups of record (pgBackRest), without a host: the settings they are built from, the
rendered configuration and units. The host tools' own rules are in tests/host/.
The real thing runs in test_e2e_pitr.py."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from tasks.config import SettingsError, settings_for
from tasks.templates import FILES, TEMPLATES

from tests.vps.test_templates import render

HOST_TOOLS = Path(__file__).resolve().parents[2] / "prodstack" / "host"

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
    from tasks.pgbackrest import archive_queue_max_mb

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
    for path in [*FILES.iterdir(), *TEMPLATES.iterdir(), *HOST_TOOLS.glob("*.py")]:
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
    with pytest.raises(SettingsError, match="^BACKUP_CIPHER_PASSPHRASE: None is invalid; "):
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
    assert [problem.key for problem in error.value.problems] == [key.strip("`")]


def test_a_host_without_a_bucket_is_warned_that_its_backups_share_its_disk(data, environ):
    from tasks.pgbackrest import offsite_warning

    assert "NO OFF-SITE BACKUPS" in offsite_warning(settings_for(data, SINGLE, environ=environ))
    assert offsite_warning(settings_for({**data, **S3}, SINGLE, environ=environ)) is None
