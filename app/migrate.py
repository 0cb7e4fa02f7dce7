"""Versioned SQL migrations, safe when several replicas run them at once.

Each file in migrations/ is applied once, in name order, inside its own transaction.
A session-level advisory lock serialises concurrent runners: the second waits, then
finds nothing left to do.
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
log = logging.getLogger("app.migrate")


def pending(applied: set[str]) -> list[Path]:
    return [p for p in sorted(MIGRATIONS_DIR.glob("*.sql")) if p.stem not in applied]


async def _connect(dsn: str, wait_seconds: float) -> asyncpg.Connection:
    deadline = time.monotonic() + wait_seconds
    attempt = 0
    while True:
        attempt += 1
        try:
            return await asyncpg.connect(dsn, timeout=5)
        except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
            if time.monotonic() >= deadline:
                raise
            log.warning("database not reachable (attempt %d: %s); retrying", attempt,
                        type(exc).__name__)
            await asyncio.sleep(min(2.0, 0.25 * attempt))


async def migrate(
    dsn: str, *, wait_seconds: float = 60.0, app_role: AppRole | None = None
) -> list[str]:
    """Apply pending migrations; then, with ``app_role``, create or correct the API's
    least-privilege role (app/db_roles.py) under the same lock."""
    conn = await _connect(dsn, wait_seconds)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", ADVISORY_LOCK_ID)
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
