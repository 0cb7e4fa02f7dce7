"""The release history's rules in prodstack-release (prodstack/host/release.py), without a
host: which release a rollback goes to, when it is refused, which images a host keeps, and
how the state files of earlier versions are folded into the history."""

from __future__ import annotations

import json
import os

import pytest

from prodstack.host import release
from tests.host.standin import StandIn


def entry(version: str, kind: str = "deploy", level: str | None = "0001_create_alerts") -> dict:
    return {"version": version, "image": f"prodstack-api:{version}",
            "digest": "sha256:" + version.encode().hex().ljust(64, "0"),
            "deployed_at": "2026-12-07T06:00:00Z", "deployed_by": "alice@laptop",
            "git_revision": None, "migration_level": level, "kind": kind,
            "replaced": None}  # fmt: skip


def after_rollback(release, releases: list[dict], to: str | None = None) -> list[dict]:
    """The history once the rollback the script plans has run (None: nothing to do)."""
    target = release.plan_rollback(releases, to)
    if target is None:
        return releases
    return releases + [{**target, "kind": "rollback", "replaced": releases[-1]["version"]}]


def test_rollback_undoes_the_last_deploy():
    history = [entry("v1"), entry("v2"), entry("v3")]
    assert release.plan_rollback(history)["version"] == "v2"


def test_a_second_rollback_stays_on_the_same_release():
    history = after_rollback(release, [entry("v1"), entry("v2"), entry("v3")])
    assert history[-1]["version"] == "v2"
    # No ping-pong back to v3, and no walk further back either: it changes nothing.
    assert release.plan_rollback(history) is None
    assert after_rollback(release, history) == history


def test_rollback_to_goes_to_any_recorded_release():
    history = after_rollback(release, [entry("v1"), entry("v2"), entry("v3")])
    history = after_rollback(release, history, to="v1")
    assert [e["version"] for e in history] == ["v1", "v2", "v3", "v2", "v1"]
    assert release.plan_rollback(history, "v1") is None  # serving already
    # By reference and by a digest prefix as well as by version.
    assert release.plan_rollback(history, "prodstack-api:v3")["version"] == "v3"
    digest = entry("v2")["digest"]
    assert release.plan_rollback(history, digest[:19])["version"] == "v2"


def test_a_deploy_after_a_rollback_is_undone_back_to_the_rollback_target():
    history = after_rollback(release, [entry("v1"), entry("v2")])
    history = history + [entry("v3")]
    assert release.plan_rollback(history)["version"] == "v1"


def test_rollback_refusals_name_the_reason():
    refused = release.Refused
    with pytest.raises(refused, match="no release recorded"):
        release.plan_rollback([])
    with pytest.raises(refused, match="first release"):
        release.plan_rollback([entry("v1")])
    with pytest.raises(refused, match=r"v9 is not in this host's release history.*v2, v1"):
        release.plan_rollback([entry("v1"), entry("v2")], "v9")


def test_rollback_below_the_database_schema_is_refused():
    target = entry("v1", level="0001_create_alerts")
    problem = release.migration_problem(target, "0002_add_index")
    assert "refused" in problem and "0001_create_alerts" in problem and "0002_add_index" in problem
    assert release.migration_problem(target, "0001_create_alerts") is None
    # Unknown on either side: not refused (the rollback says it did not check).
    assert release.migration_problem(entry("v1", level=None), "0002_add_index") is None
    assert release.migration_problem(target, None) is None
    # Numeric levels compare as numbers: 10 is after 9.
    assert release.migration_problem(entry("v1", level="9"), "10") is not None
    assert release.migration_problem(entry("v1", level="10"), "9") is None


def test_a_host_keeps_the_newest_releases_and_always_the_serving_one():
    history = [entry(f"v{i}") for i in range(1, 6)]
    kept = release.kept_digests(history, 3)
    assert kept == [entry(v)["digest"] for v in ("v5", "v4", "v3")]
    # After a rollback to v1, v1 serves: it is the newest, and kept.
    history = after_rollback(release, history, to="v1")
    kept = release.kept_digests(history, 3)
    assert kept == [entry(v)["digest"] for v in ("v1", "v5", "v4")]
    # A release that served twice counts once: three releases, not three entries.
    history = [entry("v1"), entry("v2"), entry("v3"), entry("v2", "rollback"), entry("v3")]
    kept = release.kept_digests(history, 3)
    assert kept == [entry(v)["digest"] for v in ("v3", "v2", "v1")]


def test_version_is_the_tag_or_the_short_digest():
    version_of = release.version_of
    assert version_of("prodstack-api:1a2b3c4d5e6f") == "1a2b3c4d5e6f"
    assert version_of("registry.example.com:5000/team/app:v1.4.2") == "v1.4.2"
    assert version_of("registry.example.com:5000/team/app") == "latest"
    assert version_of("app@sha256:" + "ab" * 32) == "sha256:abababababab"
    assert version_of("sha256:" + "cd" * 32) == "sha256:cdcdcdcdcdcd"


def test_old_current_and_previous_files_become_the_history(tmp_path):
    state = tmp_path / "release"
    state.mkdir()
    (state / "previous").write_text("prodstack-api:aaa\n")
    (state / "current").write_text("prodstack-api:bbb\n")
    os.utime(state / "previous", (1_700_000_000, 1_700_000_000))
    host = StandIn(images={"prodstack-api:aaa": "sha256:" + "a" * 64,
                           "prodstack-api:bbb": "sha256:" + "b" * 64})  # fmt: skip
    rel = release.Release(host, state=str(state))
    history = rel.read_history()
    assert [(e["version"], e["kind"], e["replaced"]) for e in history] == [
        ("aaa", "deploy", None), ("bbb", "deploy", "aaa")]  # fmt: skip
    assert history[0]["deployed_at"] == "2023-11-14T22:13:20Z"
    assert history[0]["digest"] == "sha256:" + "a" * 64
    # A rollback from the migrated state goes where the old `previous` pointed.
    assert release.plan_rollback(history)["image"] == "prodstack-api:aaa"
    rel.write_history(history)
    assert not (state / "current").exists() and not (state / "previous").exists()
    assert json.loads((state / "history.json").read_text())["releases"] == history
