"""The local repository's tiers: daily backups kept `backup_retention_days`, weekly fulls
`backup_weekly_retention_days`, the first full of each month
`backup_monthly_retention_days`. The history is a year of the default schedule (a full on
Sundays, differentials the other days) built from backup entries pgBackRest 2.45 wrote
(pgbackrest-info-tiers.json: `pgbackrest --output=json info` after full, diff, full,
diff), with their labels and times moved; `tier_expiry` reads only what that output has."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import pytest
from tasks.config import SettingsError, settings_for

from prodstack.host import backup as backup_module
from tests.vps.test_templates import render

RECORDED = json.loads((Path(__file__).parent / "pgbackrest-info-tiers.json").read_text())[0]
FULL, DIFF = RECORDED["backup"][0], RECORDED["backup"][1]
DAY = 86400
NOW = 1796629664  # the recorded full's stop: a Monday, 07:47 UTC
DAILY, WEEKLY, MONTHLY = 30, 90, 365


def label(stop: int) -> str:
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime(stop))


def history(days: int) -> list[dict]:
    """One backup a day for `days` days up to NOW: a full on Sundays, else a differential."""
    backups, full = [], None
    for back in range(days, -1, -1):
        stop = NOW - back * DAY
        sunday = time.gmtime(stop).tm_wday == 6
        entry = copy.deepcopy(FULL if sunday or full is None else DIFF)
        entry["timestamp"] = {"start": stop - 60, "stop": stop}
        if entry["type"] == "full":
            entry["label"] = full = label(stop) + "F"
        else:
            entry["label"] = f"{full}_{label(stop)}D"
            entry["prior"], entry["reference"] = full, [full]
        backups.append(entry)
    return backups


@pytest.fixture(scope="module")
def script():
    return backup_module


@pytest.fixture(scope="module")
def outcome(script):
    backups = history(400)
    expire, wal_fulls = script.tier_expiry(backups, NOW, DAILY, WEEKLY, MONTHLY)
    by_label = {b["label"]: b for b in backups}
    gone = set(expire)
    for b in backups:  # what pgBackRest removes with each named set
        if set(b.get("reference") or []) & gone:
            gone.add(b["label"])
    kept = [b for b in backups if b["label"] not in gone]
    return backups, by_label, expire, kept, wal_fulls


def age(b: dict) -> float:
    return (NOW - b["timestamp"]["stop"]) / DAY


def test_every_backup_of_the_daily_window_and_the_one_before_it_is_kept(outcome):
    backups, _, _, kept, _ = outcome
    labels = {b["label"] for b in kept}
    assert all(b["label"] in labels for b in backups if age(b) <= DAILY)
    # PITR to the window's first second needs the newest backup before it (and its full).
    anchor = max((b for b in backups if age(b) > DAILY), key=lambda b: b["timestamp"]["stop"])
    assert anchor["label"] in labels
    assert all(r in labels for b in kept for r in b.get("reference") or [])


def test_weekly_fulls_are_kept_three_months_and_nothing_else_older_than_the_window(outcome):
    _, _, _, kept, _ = outcome
    old = [b for b in kept if age(b) > DAILY + 7]
    assert all(b["type"] == "full" for b in old)
    fulls = [b for b in history(400) if b["type"] == "full" and DAILY < age(b) <= WEEKLY]
    assert {b["label"] for b in fulls} <= {b["label"] for b in kept}
    assert len(fulls) >= 8


def test_the_first_full_of_each_month_is_kept_a_year_then_expires(outcome):
    _, _, _, kept, _ = outcome
    monthly = [b for b in kept if age(b) > WEEKLY]
    months = [time.strftime("%Y-%m", time.gmtime(b["timestamp"]["stop"])) for b in monthly]
    assert len(months) == len(set(months)) and 8 <= len(months) <= 10
    for b in monthly:
        assert time.gmtime(b["timestamp"]["stop"]).tm_mday <= 7  # the month's first Sunday
        assert age(b) <= MONTHLY
    assert max(age(b) for b in kept) <= MONTHLY


def test_only_bases_are_named_to_pgbackrest_expire(outcome):
    _, by_label, expire, _, _ = outcome
    named = set(expire)
    # A differential of an expired full goes with it; naming it too would fail the expire.
    assert not [x for x in expire if set(by_label[x].get("reference") or []) & named]
    assert expire  # a year of history has something to expire


def test_wal_stays_continuous_from_the_daily_windows_first_full(outcome):
    backups, _, _, kept, wal_fulls = outcome
    anchor = max((b for b in backups if age(b) > DAILY), key=lambda b: b["timestamp"]["stop"])
    base = anchor["label"] if anchor["type"] == "full" else anchor["reference"][0]
    base_stop = next(b for b in backups if b["label"] == base)["timestamp"]["stop"]
    newer = [b for b in kept if b["type"] == "full" and b["timestamp"]["stop"] >= base_stop]
    assert wal_fulls == len(newer) and 5 <= wal_fulls <= 6


def test_a_young_repository_expires_nothing(script):
    backups = history(10)
    expire, wal_fulls = script.tier_expiry(backups, NOW, DAILY, WEEKLY, MONTHLY)
    # WAL continuous from the first backup: every full counts.
    assert expire == [] and wal_fulls == sum(b["type"] == "full" for b in backups) == 3


def test_tiers_runs_pgbackrests_expire_on_repository_1_only(script, monkeypatch):
    calls = []
    monkeypatch.setattr(script, "pgbackrest", lambda cfg, *args, **kw: calls.append(args))
    monkeypatch.setattr(script, "info", lambda cfg: {"backup": []})
    monkeypatch.setattr(script.time, "time", lambda: NOW)
    repo2 = copy.deepcopy(history(400))
    for b in repo2:
        b["database"] = {"id": 1, "repo-key": 2}
    cfg = {"retention_days": {"daily": DAILY, "weekly": WEEKLY, "monthly": MONTHLY}}
    script.tiers(cfg, {"backup": history(400) + repo2})
    assert calls and all(args[0] == "--repo=1" for args in calls)
    assert calls[-1][1:] == ("--repo1-retention-archive-type=full",
                             calls[-1][2], "expire")  # fmt: skip


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"backup_weekly_retention_days": 20}, "backup_weekly_retention_days"),
        ({"backup_monthly_retention_days": 60}, "backup_monthly_retention_days"),
        ({"backup_monthly_retention_days": "a year"}, "backup_monthly_retention_days"),
    ],
)
def test_each_tier_is_its_own_key_no_shorter_than_the_one_before(data, key, environ):
    from tests.vps.conftest import defaults

    with pytest.raises(SettingsError, match=f"^{key}: "):
        settings_for({**defaults(), **data}, {"web", "db"}, environ=environ)


def test_the_tiers_reach_the_host(data, environ):
    tiers = {"backup_weekly_retention_days": 100, "backup_monthly_retention_days": 400}
    cfg = settings_for({**data, **tiers}, {"web", "db"}, environ=environ)
    settings = json.loads(render("backup.j2.json", cfg))
    assert settings["retention_days"] == {"daily": 30, "weekly": 100, "monthly": 400}
    conf = render("pgbackrest.j2.conf", cfg)
    assert "repo1-retention-full=400\n" in conf
