"""PostgreSQL: the asyncpg pool and the alert queries.

The pool opens connections lazily (min_size=0), so the process starts and serves
/health/live while the database is down, and heals by itself when it returns.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg

from app import metrics

CONNECTION_ERRORS = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
)

ALERT_COLUMNS = (
    "id, message, type, priority, region, latitude, longitude, acknowledged, "
    "acknowledged_at, created_at"
)


class Database:
    def __init__(self, dsn: str, *, max_size: int, command_timeout: float = 5.0) -> None:
        self._dsn = dsn
        self._max_size = max_size
        self._command_timeout = command_timeout
        self.pool: asyncpg.Pool | None = None

    async def open(self) -> None:
        self.pool = await asyncpg.create_pool(
            self._dsn,
            min_size=0,
            max_size=self._max_size,
            command_timeout=self._command_timeout,
            timeout=2.0,
            max_inactive_connection_lifetime=300,
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
            async with self.pool.acquire(timeout=2.0) as conn:
                return await getattr(conn, method)(query, *args)
        except (asyncpg.ConnectionDoesNotExistError, asyncpg.InterfaceError):
            # A connection that died with a database restart is dropped by the pool;
            # one retry on a fresh connection hides the restart from the client.
            if not retry:
                raise
            return await self._run(method, query, *args, retry=False)

    async def ping(self, timeout: float) -> None:
        await asyncio.wait_for(self._run("fetchval", "SELECT 1"), timeout)

    async def insert_alert(
        self, *, message: str, type: str, priority: str, region: str,
        latitude: float | None, longitude: float | None,
    ) -> asyncpg.Record:
        return await self._run(
            "fetchrow",
            f"INSERT INTO alerts (id, message, type, priority, region, latitude, longitude) "
            f"VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {ALERT_COLUMNS}",
            uuid.uuid4(), message, type, priority, region, latitude, longitude,
            retry=False,
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
