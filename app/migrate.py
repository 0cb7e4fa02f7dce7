"""Versioned SQL migrations, safe when several replicas run them at once.

Each file in migrations/ is applied once, in name order, inside its own transaction.
A session-level advisory lock serialises concurrent runners: the second waits, then
finds nothing left to do.

Bounded on the server, not only by whoever runs it: every statement of the session has a
`statement_timeout`, and each migration a `lock_timeout`, so an ALTER queued behind a long
transaction gives up (and stops blocking the reads queued behind it) even when the client
was killed. The session is named `prodstack-migrate` (application_name) so a deploy that
gave up can terminate it: `python -m app migrate-stop`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import asyncpg

from app.core.config import AppRole
from app.db_roles import ensure_app_role

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# An arbitrary constant: every prodstack migrator contends for the same lock.
ADVISORY_LOCK_ID = 0x70726F64  # "prod"
APPLICATION_NAME = "prodstack-migrate"
log = logging.getLogger("app.migrate")


def pending(applied: set[str]) -> list[Path]:
    return [p for p in sorted(MIGRATIONS_DIR.glob("*.sql")) if p.stem not in applied]


async def _connect(
    dsn: str, wait_seconds: float, server_settings: dict[str, str] | None = None
) -> asyncpg.Connection:
    deadline = time.monotonic() + wait_seconds
    attempt = 0
    while True:
        attempt += 1
        try:
            return await asyncpg.connect(dsn, timeout=5, server_settings=server_settings)
        except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
            if time.monotonic() >= deadline:
                raise
            log.warning(
                "database not reachable (attempt %d: %s); retrying", attempt, type(exc).__name__
            )
            await asyncio.sleep(min(2.0, 0.25 * attempt))


def _ms(seconds: float) -> str:
    return str(max(1, int(seconds * 1000)))


async def migrate(
    dsn: str,
    *,
    wait_seconds: float = 60.0,
    app_role: AppRole | None = None,
    lock_timeout_seconds: float = 10.0,
    statement_timeout_seconds: float = 300.0,
) -> list[str]:
    """Apply pending migrations; then, with ``app_role``, create or correct the API's
    least-privilege role (app/db_roles.py) under the same lock. A migration waits at most
    ``lock_timeout_seconds`` for a table lock, any statement (the advisory lock's wait
    too) at most ``statement_timeout_seconds``: PostgreSQL cancels them itself."""
    conn = await _connect(dsn, wait_seconds, {
        "application_name": APPLICATION_NAME,
        "statement_timeout": _ms(statement_timeout_seconds),
    })  # fmt: skip
    try:
        # Another migrator may hold the advisory lock for a whole migration: that wait is
        # bounded by statement_timeout only.
        await conn.execute("SELECT pg_advisory_lock($1)", ADVISORY_LOCK_ID)
        await conn.execute(f"SET lock_timeout = {_ms(lock_timeout_seconds)}")
        try:
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            rows = await conn.fetch("SELECT version FROM schema_migrations")
            applied = {r["version"] for r in rows}
            done = []
            for path in pending(applied):
                async with conn.transaction():
                    await conn.execute(path.read_text())
                    await conn.execute(
                        "INSERT INTO schema_migrations (version) VALUES ($1)", path.stem
                    )
                log.info("applied migration %s", path.stem)
                done.append(path.stem)
            if not done:
                log.info("schema is up to date (%d migrations)", len(applied))
            if app_role is not None:
                await ensure_app_role(conn, app_role)
            return done
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", ADVISORY_LOCK_ID)
    finally:
        await conn.close()


async def schema_version(dsn: str, *, wait_seconds: float = 10.0) -> str | None:
    """The newest migration applied to the database (its file name without .sql), or None
    before the first migrate. Deploys record it with each release (the image contract)."""
    conn = await _connect(dsn, wait_seconds)
    try:
        if await conn.fetchval("SELECT to_regclass('schema_migrations')") is None:
            return None
        return await conn.fetchval("SELECT max(version) FROM schema_migrations")
    finally:
        await conn.close()


async def stop_migrations(dsn: str, *, wait_seconds: float = 10.0) -> int:
    """Terminate every `prodstack-migrate` session on this database (a deploy's migrate that
    ran out of time): its transaction rolls back and its queued lock is gone. Returns how
    many. A role may terminate the sessions it logged in with; nothing else is touched.

    `SET ROLE NONE` first: a login role whose default role is the owner (the VPS's) would
    otherwise ask as the owner, which may not signal the login role's sessions; and only
    sessions this role may end are asked for, so another login role's is left alone."""
    conn = await _connect(dsn, wait_seconds)
    try:
        await conn.execute("SET ROLE NONE")
        return await conn.fetchval(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE application_name = $1 AND datname = current_database()"
            " AND pid <> pg_backend_pid() AND pg_has_role(usesysid, 'USAGE')",
            APPLICATION_NAME,
        )
    finally:
        await conn.close()
