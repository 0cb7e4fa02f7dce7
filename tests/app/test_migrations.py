"""`python -m app migrate`: idempotent, and safe when replicas run it at the same time."""

from __future__ import annotations

import subprocess
import sys
import time

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
        subprocess.Popen(
            [sys.executable, "-m", "app", "migrate"],
            env=env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
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


def _migrate_sessions(pg, database: str) -> str:
    return pg.psql(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'prodstack-migrate'"
        f" AND datname = '{database}'"
    )


def _held_lock(database_url: str) -> subprocess.Popen:
    """Another session holding schema_migrations in ACCESS EXCLUSIVE mode (a long
    transaction, as a report or a backup would), until it is killed."""
    script = (
        "import asyncio, asyncpg, sys\n"
        "async def main():\n"
        f"    conn = await asyncpg.connect({database_url!r})\n"
        "    tr = conn.transaction(); await tr.start()\n"
        "    await conn.execute('LOCK TABLE schema_migrations IN ACCESS EXCLUSIVE MODE')\n"
        "    print('locked', flush=True); await asyncio.sleep(600)\n"
        "asyncio.run(main())\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_a_migrate_blocked_by_a_lock_gives_up_within_its_lock_timeout(pg, redis_server):
    url = pg.fresh_database("migrate_locked")
    env = app_env(url, redis_server.url, MIGRATE_LOCK_TIMEOUT_SECONDS="1",
                  MIGRATE_STATEMENT_TIMEOUT_SECONDS="60")  # fmt: skip
    assert run_app("migrate", env).returncode == 0
    holder = _held_lock(url)
    try:
        started = time.monotonic()
        result = run_app("migrate", env)
        elapsed = time.monotonic() - started
        assert result.returncode == 1
        assert "LockNotAvailable" in result.stderr or "lock timeout" in result.stderr
        assert elapsed < 15, elapsed  # 1 s of lock wait, plus the interpreter's start
        # The server gave up itself: no migrate session is left queued on the lock.
        assert _migrate_sessions(pg, "migrate_locked") == "0"
    finally:
        holder.kill()
        holder.wait()


def test_a_killed_migrate_leaves_its_session_until_migrate_stop_ends_it(pg, redis_server):
    url = pg.fresh_database("migrate_killed")
    env = app_env(url, redis_server.url, MIGRATE_LOCK_TIMEOUT_SECONDS="600",
                  MIGRATE_STATEMENT_TIMEOUT_SECONDS="600")  # fmt: skip
    assert run_app("migrate", env).returncode == 0
    holder = _held_lock(url)
    try:
        stuck = subprocess.Popen([sys.executable, "-m", "app", "migrate"], env=env, cwd=REPO,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        deadline = time.monotonic() + 30
        while _migrate_sessions(pg, "migrate_killed") != "1":
            assert time.monotonic() < deadline, "the migrate never reached the server"
            time.sleep(0.2)
        time.sleep(0.5)  # into its lock wait
        stuck.kill()  # what `docker rm -f` does to the container at migrate_timeout_seconds
        stuck.wait()
        time.sleep(1)
        # The server does not notice a killed client while the session waits for a lock.
        assert _migrate_sessions(pg, "migrate_killed") == "1"
        stop = run_app("migrate-stop", env)
        assert stop.returncode == 0, stop.stderr
        assert "terminated 1 migrate session(s)" in stop.stderr
        deadline = time.monotonic() + 10
        while _migrate_sessions(pg, "migrate_killed") != "0":
            assert time.monotonic() < deadline, "the migrate session outlived migrate-stop"
            time.sleep(0.2)
    finally:
        holder.kill()
        holder.wait()
