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


async def dependency_checks(request: Request) -> dict[str, DependencyStatus]:
    state = request.app.state
    db, cache = await asyncio.gather(_check(state.db.ping), _check(state.cache.ping))
    metrics.db_connected.set(1 if db.status == "up" else 0)
    return {"postgres": db, "redis": cache}


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
