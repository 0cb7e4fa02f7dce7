"""PostgreSQL: the asyncpg pool and the alert queries.

The pool opens connections lazily (min_size=0), so the process starts and serves
/health/live while the database is down, and heals by itself when it returns.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from app import metrics

# Failures that mean "the database is unavailable" (503), not "the request is wrong".
CONNECTION_ERRORS = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    # Admin/crash shutdown and "cannot connect now": a restart or an RDS failover.
    asyncpg.OperatorInterventionError,
    # Too many connections: replicas x workers x DB_POOL_MAX above max_connections.
    asyncpg.InsufficientResourcesError,
)
# Worth one retry on a fresh connection: the old one died with a restart or failover.
_RETRYABLE = (
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.InterfaceError,
    asyncpg.OperatorInterventionError,
)

ALERT_COLUMNS = (
    "id, message, type, priority, region, latitude, longitude, acknowledged, "
    "acknowledged_at, created_at"
)


def uuid7() -> uuid.UUID:
    """A time-ordered UUID (RFC 9562 version 7): new rows land at the right edge of the
    primary-key index instead of at random pages, which keeps inserts cheap."""
    value = (time.time_ns() // 1_000_000) << 80 | int.from_bytes(os.urandom(10), "big")
    value = (value & ~(0xF << 76)) | (0x7 << 76)  # version 7
    value = (value & ~(0x3 << 62)) | (0x2 << 62)  # RFC 4122 variant
    return uuid.UUID(int=value)


_INSERT_BATCH = (
    "INSERT INTO alerts (id, message, type, priority, region, latitude, longitude) "
    "SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], "
    f"$6::float8[], $7::float8[]) RETURNING {ALERT_COLUMNS}"
)


class _InsertBatcher:
    """Group commit: inserts go to PostgreSQL as one multi-row INSERT in one transaction,
    so a burst of creates pays for one round trip, one pool checkout and one commit.

    With no write in flight, a batch leaves on the next event-loop tick (no added
    latency). While MAX_IN_FLIGHT batches are being written, new rows wait for one of
    them to finish, so batches grow with load instead of multiplying.
    """

    MAX_IN_FLIGHT = 2

    def __init__(self, db: Database) -> None:
        self._db = db
        self._pending: list[tuple[tuple, asyncio.Future]] = []
        self._in_flight = 0
        self._flush_scheduled = False

    def submit(self, row: tuple) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        self._pending.append((row, waiter))
        if not self._flush_scheduled and self._in_flight < self.MAX_IN_FLIGHT:
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        return waiter

    def _flush(self) -> None:
        self._flush_scheduled = False
        if not self._pending or self._in_flight >= self.MAX_IN_FLIGHT:
            return
        batch, self._pending = self._pending, []
        self._in_flight += 1
        task = asyncio.ensure_future(self._write(batch))
        task.add_done_callback(self._written)

    def _written(self, task: asyncio.Task) -> None:
        self._in_flight -= 1
        if not task.cancelled():
            task.exception()  # already delivered to the waiters
        if self._pending and not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    async def _write(self, batch: list[tuple[tuple, asyncio.Future]]) -> None:
        columns = list(zip(*(row for row, _ in batch), strict=True))
        try:
            rows = await self._db._run("fetch", _INSERT_BATCH, *columns, retry=False)
        except BaseException as exc:
            for _, waiter in batch:
                if not waiter.done():
                    waiter.set_exception(exc)
            raise
        by_id = {r["id"]: r for r in rows}
        for row, waiter in batch:
            if not waiter.done():
                waiter.set_result(by_id[row[0]])


async def _keep_session(connection: asyncpg.Connection) -> None:
    """Pool release hook. asyncpg's default sends RESET ALL, UNLISTEN and friends on every
    release: one more round trip per request. The app sets no session state, and any
    open transaction is still rolled back before this runs."""


class Database:
    def __init__(
        self, dsn: str, *, max_size: int, command_timeout: float = 5.0,
        statement_cache_size: int = 100, password: Callable[[], Awaitable[str]] | None = None,
    ) -> None:
        self._dsn = dsn
        # Called for every new connection (an IAM token); None: the DSN's password.
        self._password = password
        self._max_size = max_size
        self._command_timeout = command_timeout
        # 0: asyncpg runs every query as an unnamed statement, which RDS Proxy can move
        # between database connections; named (cached) ones pin the client connection.
        # Source: RDS user guide, rds-proxy-pinning.html (PostgreSQL: prepared statements).
        self._statement_cache_size = statement_cache_size
        self.pool: asyncpg.Pool | None = None
        self._inserts = _InsertBatcher(self)

    async def open(self) -> None:
        self.pool = await asyncpg.create_pool(
            self._dsn,
            min_size=0,
            max_size=self._max_size,
            command_timeout=self._command_timeout,
            timeout=2.0,
            max_inactive_connection_lifetime=300,
            reset=_keep_session,
            statement_cache_size=self._statement_cache_size,
            **({"password": self._password} if self._password is not None else {}),
        )
        metrics.db_pool_max.set(self._max_size)

    async def close(self, timeout: float = 5.0) -> None:
        if self.pool is not None:
            try:
                await asyncio.wait_for(self.pool.close(), timeout)
            except TimeoutError:
                self.pool.terminate()

    def update_gauges(self) -> None:
        if self.pool is not None:
            metrics.db_pool_size.set(self.pool.get_size())
            metrics.db_pool_idle.set(self.pool.get_idle_size())

    async def _run(self, method: str, query: str, *args: Any, retry: bool = True) -> Any:
        assert self.pool is not None
        try:
            # One deadline over checkout, query and release: against a blackholed server,
            # asyncpg's release waits out its own cancel request after command_timeout.
            # (acquire(timeout=...) would add a wait_for task to every checkout.)
            async with asyncio.timeout(self._command_timeout + 1), self.pool.acquire() as conn:
                return await getattr(conn, method)(query, *args)
        except _RETRYABLE:
            # The pool drops the dead connection; one retry on a fresh one hides a
            # database restart from the client.
            if not retry:
                raise
            return await self._run(method, query, *args, retry=False)

    async def ping(self, timeout: float) -> None:
        await asyncio.wait_for(self._run("fetchval", "SELECT 1"), timeout)

    async def insert_alert(
        self, *, message: str, type: str, priority: str, region: str,
        latitude: float | None, longitude: float | None,
    ) -> asyncpg.Record:
        return await self._inserts.submit(
            (uuid7(), message, type, priority, region, latitude, longitude)
        )

    async def get_alert(self, alert_id: uuid.UUID) -> asyncpg.Record | None:
        return await self._run(
            "fetchrow", f"SELECT {ALERT_COLUMNS} FROM alerts WHERE id = $1", alert_id
        )

    async def acknowledge_alert(self, alert_id: uuid.UUID) -> asyncpg.Record | None:
        # coalesce keeps the first acknowledgement time: acknowledging twice is a no-op.
        return await self._run(
            "fetchrow",
            f"UPDATE alerts SET acknowledged = true, "
            f"acknowledged_at = coalesce(acknowledged_at, now()) "
            f"WHERE id = $1 RETURNING {ALERT_COLUMNS}",
            alert_id,
        )

    async def list_alerts(
        self, *, limit: int, offset: int, filters: dict[str, str]
    ) -> tuple[list[asyncpg.Record], int]:
        where, args = [], []
        for column in ("type", "priority", "region"):
            if column in filters:
                args.append(filters[column])
                where.append(f"{column} = ${len(args)}")
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        n = len(args)
        rows = await self._run(
            "fetch",
            f"SELECT {ALERT_COLUMNS}, count(*) OVER () AS total FROM alerts {clause} "
            f"ORDER BY created_at DESC, id DESC LIMIT ${n + 1} OFFSET ${n + 2}",
            *args, limit, offset,
        )
        if rows:
            return rows, rows[0]["total"]
        # Past the last page the window count has no row to ride on.
        total = await self._run("fetchval", f"SELECT count(*) FROM alerts {clause}", *args)
        return [], total
