"""The off-site repository's restore drill: the same drill as the daily one, on its own
weekly timer (only with a bucket), restoring from repository 2, with metrics of its own so
its alerts (OffsiteRestoreDrillFailed, promtool cases in prodstack-alerts.test.yml) never
mix with the daily drill's. The restore itself runs in test_e2e_pitr.py's drill."""

from __future__ import annotations

import json

import pytest
from tasks.config import settings_for

from prodstack.host import drill as drill_module
from tests.vps.test_pitr import S3, SINGLE
from tests.vps.test_templates import render


@pytest.fixture(scope="module")
def drill():
    return drill_module


@pytest.mark.parametrize(
    ("args", "parsed"),
    [([], ("run", 1)), (["run"], ("run", 1)), (["run", "--repo=2"], ("run", 2)),
     (["cleanup"], ("cleanup", None)), (["run", "--repo=3"], None), (["run", "2"], None)],
)  # fmt: skip
def test_the_drill_takes_the_offsite_repository_by_option(drill, args, parsed):
    assert drill.parse(args) == parsed


def test_the_offsite_drill_writes_its_own_metrics(drill):
    daily = drill.metric_names(1)
    offsite = drill.metric_names(2)
    # The daily drill's file and names stay as they were (its alerts and the e2e read them).
    assert daily == ("prodstack_restore_drill.prom", "prodstack_restore_drill")
    assert offsite[0] != daily[0] and offsite[1] == "prodstack_restore_drill_offsite"
    text = drill.drill_metrics(offsite[1], False, 12.5, 1796629664.0)
    values = dict(line.split() for line in text.splitlines() if not line.startswith("#"))
    assert values == {
        "prodstack_restore_drill_offsite_success": "0",
        "prodstack_restore_drill_offsite_duration_seconds": "12.5",
        "prodstack_restore_drill_offsite_last_success_timestamp_seconds": "1796629664",
    }
    assert "prodstack_restore_drill_success" not in text


def test_the_newest_point_is_looked_up_in_the_drilled_repository_only(drill, monkeypatch, tmp_path):
    backups = [{"label": label, "database": {"id": 1, "repo-key": repo},
                "info": {"size": size}, "timestamp": {"stop": 1}}
               for label, repo, size in (("20261207-020000F", 1, 100),
                                         ("20261207-021000F", 2, 200))]  # fmt: skip
    point = {"labels": ["20261207-020000F", "20261207-021000F"], "recorded_at": "2026-12-07",
             "restore_point": "p", "counts": {}}  # fmt: skip
    (tmp_path / "p.json").write_text(json.dumps(point))
    asked = []

    class Answer:
        stdout = json.dumps([{"backup": backups}])

    def as_postgres(*args, **kwargs):
        asked.append(args)
        return Answer()

    monkeypatch.setattr(drill, "as_postgres", as_postgres)
    cfg = {"stanza": "prodstack", "points_directory": str(tmp_path)}
    assert drill.newest_point(cfg, 2)[0::2] == ("20261207-021000F", 200)
    assert "--repo=2" in asked[-1]
    assert drill.newest_point(cfg, 1)[0::2] == ("20261207-020000F", 100)


def test_the_offsite_drill_timer_is_installed_only_with_a_bucket(data, environ):
    from tasks.pgbackrest import OFFSITE_UNITS

    cfg = settings_for({**data, **S3, "backup_offsite_drill_calendar": "Sat *-*-* 09:00:00"},
                       SINGLE, environ=environ)  # fmt: skip
    assert "OnCalendar=Sat *-*-* 09:00:00" in render("prodstack-restore-drill-offsite.j2.timer",
                                                     cfg)  # fmt: skip
    service = render("prodstack-restore-drill-offsite.j2.service", cfg)
    assert "ExecStart=/usr/local/sbin/prodstack-restore-drill run --repo=2" in service
    assert "ExecStopPost=/usr/local/sbin/prodstack-restore-drill cleanup" in service
    source = (OFFSITE_UNITS[0], OFFSITE_UNITS[1])
    assert source == ("prodstack-restore-drill-offsite.service",
                      "prodstack-restore-drill-offsite.timer")  # fmt: skip
