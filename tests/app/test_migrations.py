"""`python -m app migrate`: idempotent, and safe when replicas run it at the same time."""

from __future__ import annotations

import subprocess
import sys

from tests.support.app_server import REPO, app_env, run_app


def test_migrate_is_idempotent(pg, redis_server):
    env = app_env(pg.fresh_database("migrate_twice"), redis_server.url)
    first = run_app("migrate", env)
    assert first.returncode == 0, first.stderr
    assert "applied migration 0001_create_alerts" in first.stderr
    second = run_app("migrate", env)
    assert second.returncode == 0, second.stderr
    assert "schema is up to date" in second.stderr
    assert pg.psql("SELECT count(*) FROM schema_migrations", "migrate_twice") == "1"


def test_concurrent_migrations_apply_each_file_once(pg, redis_server):
    env = app_env(pg.fresh_database("migrate_race"), redis_server.url)
    procs = [
        subprocess.Popen([sys.executable, "-m", "app", "migrate"], env=env, cwd=REPO,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(6)
    ]
    results = [(p.wait(60), p.stderr.read()) for p in procs]
    assert all(code == 0 for code, _ in results), results
    applied = [err for _, err in results if "applied migration" in err]
    assert len(applied) == 1, results
    assert pg.psql("SELECT count(*) FROM schema_migrations", "migrate_race") == "1"
    assert pg.psql("SELECT to_regclass('alerts')", "migrate_race") == "alerts"


def test_migrate_fails_cleanly_when_the_database_never_comes(redis_server):
    env = app_env("postgresql://u:p@127.0.0.1:1/db", redis_server.url, MIGRATE_WAIT_SECONDS="1")
    result = run_app("migrate", env)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("migrate failed:")


def test_schema_version_prints_the_newest_applied_migration(pg, redis_server):
    env = app_env(pg.fresh_database("schema_version"), redis_server.url)
    before = run_app("schema-version", env)
    assert (before.returncode, before.stdout) == (0, "\n")  # no migrate yet: no level
    assert run_app("migrate", env).returncode == 0
    pg.psql("INSERT INTO schema_migrations (version) VALUES ('0000_older')", "schema_version")
    after = run_app("schema-version", env)
    assert (after.returncode, after.stdout) == (0, "0001_create_alerts\n")
    down = run_app("schema-version", app_env("postgresql://u:p@127.0.0.1:1/db", redis_server.url))
    assert down.returncode == 1 and "schema-version failed" in down.stderr
