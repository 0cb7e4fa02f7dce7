"""How `prodstack-backup init` reads each repository before it creates anything, from
`pgbackrest info` answers recorded with pgBackRest 2.45 (Debian 12's) against real
clusters and repositories: a repository with this cluster's stanza, none yet, another
cluster's history (a replaced host sharing the bucket), a wrong passphrase, and an
unreachable S3 endpoint. The whole path runs in test_e2e_host_lost.py."""

from __future__ import annotations

import json
import subprocess

import pytest

from prodstack.host import backup as backup_module

THIS, OTHER = 7716442161036742958, 7716442132457631766
OK = {"code": 0, "message": "ok"}
NO_BACKUP = {"code": 2, "message": "no valid backups"}
MISSING = {"code": 1, "message": "missing stanza path"}
BAD_KEY = {
    "code": 99,
    "message": "[FormatError] unable to load info file '/p/backup/s/backup.info' or "
    "'/p/backup/s/backup.info.copy':\nFormatError: key/value found outside of section at "
    "line 1: \ufffd\ufffd\nHINT: has a stanza-create been performed?",
}
DOWN = {
    "code": 99,
    "message": "[HostConnectError] unable to get address for 'b.127.0.0.1': [-2] Name or "
    "service not known",
}


def answer(*repos: tuple[int, dict, int | None]) -> str:
    """`pgbackrest --output=json info` for repositories (key, status, system id or None)."""
    return json.dumps([{
        "name": "prodstack",
        "repo": [{"key": k, "cipher": "aes-256-cbc", "status": st} for k, st, _ in repos],
        "db": [{"id": 1, "repo-key": k, "system-id": sid, "version": "15"}
               for k, _, sid in repos if sid is not None],
        "backup": [],
    }])  # fmt: skip


@pytest.fixture
def script(monkeypatch):
    module = backup_module
    monkeypatch.setattr(module, "system_id", lambda cfg: THIS)
    return module


def states(script, monkeypatch, stdout: str) -> dict:
    done = subprocess.CompletedProcess([], 0, stdout=stdout, stderr="")
    monkeypatch.setattr(script, "pgbackrest", lambda cfg, *args, **kw: done)
    return {r: s for r, (s, _) in script.repo_states({"repos": 2}).items()}


@pytest.mark.parametrize(
    ("repos", "expected"),
    [
        (((1, OK, THIS), (2, OK, THIS)), {1: "ours", 2: "ours"}),
        (((1, NO_BACKUP, THIS), (2, MISSING, None)), {1: "ours", 2: "empty"}),
        # A replacement host: the bucket holds the lost host's cluster.
        (((1, MISSING, None), (2, OK, OTHER)), {1: "empty", 2: "foreign"}),
        (((1, MISSING, None), (2, BAD_KEY, None)), {1: "empty", 2: "unreadable"}),
        (((1, OK, THIS), (2, DOWN, None)), {1: "ours", 2: "unreachable"}),
    ],
)
def test_each_repository_is_classified_against_this_cluster(script, monkeypatch, repos, expected):
    assert states(script, monkeypatch, answer(*repos)) == expected


def test_no_answer_at_all_is_unreachable_not_empty(script, monkeypatch):
    # An empty repository would get a stanza; a repository nobody could ask must not.
    assert states(script, monkeypatch, "") == {1: "unreachable", 2: "unreachable"}


def test_another_clusters_history_creates_nothing_anywhere(script, monkeypatch, tmp_path):
    calls = []
    found = {1: ("empty", "missing"), 2: ("foreign", "system id 1")}
    monkeypatch.setattr(script, "repo_states", lambda cfg: found)
    monkeypatch.setattr(script, "pgbackrest", lambda cfg, *args, **kw: calls.append(args))
    cfg = {"repos": 2, "points_directory": str(tmp_path / "points")}
    script.init(cfg)
    assert calls == []
    assert json.loads((tmp_path / "backup-state.json").read_text())["2"][0] == "foreign"


@pytest.mark.parametrize(
    ("state", "words"),
    [("unreadable", "BACKUP_CIPHER_PASSPHRASE"), ("unreachable", "cannot be reached")],
)
def test_a_repository_it_cannot_use_fails_init_naming_why(script, monkeypatch, tmp_path, state,
                                                          words):  # fmt: skip
    monkeypatch.setattr(script, "repo_states",
                        lambda cfg: {1: ("ours", "ok"), 2: (state, "detail")})  # fmt: skip
    used = []
    monkeypatch.setattr(script, "only_repo1", lambda cfg: {**cfg, "repos": 1, "only": True})
    monkeypatch.setattr(script, "info", lambda cfg: {"backup": [
        {"database": {"repo-key": 1}}], "repo": []})  # fmt: skip
    monkeypatch.setattr(script, "metrics", lambda cfg, current: used.append(cfg))
    cfg = {"repos": 2, "points_directory": str(tmp_path / "points")}
    with pytest.raises(SystemExit, match=words):
        script.init(cfg)
    # Repository 1 went on being looked after, through a configuration without repository 2.
    assert used and used[0].get("only")


def test_a_pgbackrest_lock_held_by_another_process_is_waited_out(monkeypatch):
    """The asynchronous archive-push holds the stanza's archive lock for a while after a
    restore's promotion; a stanza-create meeting it (exit 50) waits instead of failing."""
    script = backup_module
    codes = iter([50, 50, 0])
    calls = []

    def run(*args, **kwargs):
        calls.append(args)
        return subprocess.CompletedProcess(args, next(codes), "", "")

    monkeypatch.setattr(script, "as_postgres", run)
    monkeypatch.setattr(script.time, "sleep", lambda s: None)
    assert script.pgbackrest({"stanza": "prodstack"}, "stanza-create").returncode == 0
    assert len(calls) == 3


def test_another_failure_is_not_retried(monkeypatch):
    script = backup_module
    calls = []

    def run(*args, **kwargs):
        calls.append(args)
        return subprocess.CompletedProcess(args, 55, "", "")

    monkeypatch.setattr(script, "as_postgres", run)
    with pytest.raises(SystemExit, match="stanza-create failed"):
        script.pgbackrest({"stanza": "prodstack"}, "stanza-create")
    assert len(calls) == 1
