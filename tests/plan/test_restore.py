"""`prodstack restore`: writes restore_to_time (or restore_source: release) into a stack
file the way `rollback` writes `image`, refusing times RDS cannot restore to."""

from __future__ import annotations

import json
import re
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from prodstack import cli
from prodstack.errors import UsageError
from prodstack.restore import check_time

REPO = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 12, 7, 6, 0, tzinfo=UTC)


@pytest.fixture
def checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    shutil.copy(REPO / "Pulumi.prod.yaml", tmp_path / "Pulumi.prod.yaml")
    # The stack-file path, not the Pulumi CLI (not installed here; a test must not use it).
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    return tmp_path


def _config(root: Path) -> dict:
    return yaml.safe_load((root / "Pulumi.prod.yaml").read_text())["config"]


@pytest.mark.parametrize("when, message", [
    ("2026-12-07 05:00:00", "a UTC time YYYY-MM-DDTHH:MM:SSZ"),
    ("2026-12-07T05:00:00+01:00", "a UTC time"),
    ("2026-12-07T05:00:00Z'; DROP TABLE alerts;--", "a UTC time"),
    ("2026-12-07T05:00:00Z\nprodstack:restore_source: release", "a UTC time"),
    ("2026-02-30T05:00:00Z", "not a real date"),
    ("2026-12-07T07:00:00Z", "in the future"),
    ("2026-11-01T05:00:00Z", "older than the stack's backup_retention_days (30)"),
    ("2" * 5000, "a UTC time"),
])
def test_times_rds_cannot_restore_to_are_refused(when: str, message: str) -> None:
    with pytest.raises(UsageError, match=re.escape(message)):
        check_time(when, retention_days=30, now=NOW)


def test_restore_writes_the_time_keeping_every_other_line(checkout: Path, capsys) -> None:
    before = (checkout / "Pulumi.prod.yaml").read_text()
    when = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert cli.main(["restore", "--stack", "prod", "--to", when, "--root", str(checkout),
                     "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["key"] == "prodstack:restore_to_time" and out["value"] == when
    after = (checkout / "Pulumi.prod.yaml").read_text()
    assert _config(checkout)["prodstack:restore_to_time"] == when
    # One line added; comments and every other line untouched.
    added = [line for line in after.splitlines() if line not in before.splitlines()]
    assert len(added) == 1 and "prodstack:restore_to_time" in added[0], added
    assert len(after.splitlines()) == len(before.splitlines()) + 1
    assert "# compliance: nobody can lift it after 3 days" in after
    # Then release, which needs the restore first.
    assert cli.main(["restore", "--stack", "prod", "--release", "--root", str(checkout)]) == 0
    assert _config(checkout)["prodstack:restore_source"] == "release"
    assert "stops managing it" in capsys.readouterr().out


def test_bad_usage_is_one_line_and_exit_2(checkout: Path, capsys) -> None:
    cases = [
        ["restore", "--stack", "prod", "--root", str(checkout)],
        ["restore", "--stack", "prod", "--to", "2026-12-07T05:00:00Z", "--release",
         "--root", str(checkout)],
        ["restore", "--stack", "prod", "--release", "--root", str(checkout)],
        ["restore", "--stack", "nope", "--to", "2026-12-07T05:00:00Z", "--root", str(checkout)],
        ["restore", "--stack", "prod", "--to", "yesterday", "--root", str(checkout)],
    ]
    before = (checkout / "Pulumi.prod.yaml").read_text()
    for argv in cases:
        assert cli.main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("prodstack: ") and "\n" not in err, err
    assert (checkout / "Pulumi.prod.yaml").read_text() == before
