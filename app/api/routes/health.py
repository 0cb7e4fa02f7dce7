"""Health: liveness depends on nothing; readiness checks PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import time

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app import metrics
from app.api.schemas import DependencyStatus, Health, Liveness, Readiness

CHECK_TIMEOUT_SECONDS = 1.0
_encode = msgspec.json.Encoder().encode
_LIVE = _encode(Liveness(status="alive"))


async def _check(probe) -> DependencyStatus:
    started = time.perf_counter()
    try:
        await probe(CHECK_TIMEOUT_SECONDS)
    except Exception as exc:  # any failure means "down"; the type names the cause
        return DependencyStatus(status="down", error=type(exc).__name__)
    elapsed_ms = (time.perf_counter() - started) * 1000
    return DependencyStatus(status="up", latency_ms=round(elapsed_ms, 2))


class DependencyProbe:
    """Checks PostgreSQL and Redis. Concurrent callers share the check in flight, so a
    flood of health requests costs one pool connection, not the whole pool."""

    def __init__(self, db, cache) -> None:
        self._db = db
        self._cache = cache
        self._in_flight: asyncio.Future | None = None

    async def checks(self) -> dict[str, DependencyStatus]:
        if self._in_flight is None:
            self._in_flight = asyncio.ensure_future(self._run())
            self._in_flight.add_done_callback(self._finished)
        return await asyncio.shield(self._in_flight)

    def _finished(self, future: asyncio.Future) -> None:
        self._in_flight = None

    async def _run(self) -> dict[str, DependencyStatus]:
        db, cache = await asyncio.gather(_check(self._db.ping), _check(self._cache.ping))
        metrics.db_connected.set(1 if db.status == "up" else 0)
        self._db.update_gauges()
        return {"postgres": db, "redis": cache}


async def dependency_checks(request: Request) -> dict[str, DependencyStatus]:
    return await request.app.state.probe.checks()


async def live(request: Request) -> Response:
    return Response(_LIVE, media_type="application/json")


async def ready(request: Request) -> Response:
    checks = await dependency_checks(request)
    ok = all(c.status == "up" for c in checks.values())
    body = Readiness(status="ready" if ok else "not_ready", checks=checks)
    return Response(_encode(body), 200 if ok else 503, media_type="application/json")


async def health(request: Request) -> Response:
    checks = await dependency_checks(request)
    ok = all(c.status == "up" for c in checks.values())
    body = Health(
        status="ok" if ok else "degraded",
        version=request.app.state.settings.app_version,
        uptime_seconds=round(time.monotonic() - request.app.state.started_at, 3),
        checks=checks,
    )
    return Response(_encode(body), 200 if ok else 503, media_type="application/json")


routes = [
    Route("/health/live", live, methods=["GET"]),
    Route("/health/ready", ready, methods=["GET"]),
    Route("/health", health, methods=["GET"]),
]
