"""The ASGI application: routers, the request middleware, error handlers, the lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import re
import time
import uuid

import msgspec
from prometheus_client import multiprocess
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from app import metrics
from app.api import openapi
from app.api.deps import client_address
from app.api.errors import ApiError, error_response
from app.api.routes import alerts, health
from app.api.routes import metrics as metrics_routes
from app.api.routes.health import DependencyProbe
from app.cache import Cache
from app.core.config import Settings, settings_or_exit
from app.core.logging import access_log, configure_logging
from app.db import CONNECTION_ERRORS, Database
from app.db_iam import IamTokenPassword

_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,128}$")
GAUGE_REFRESH_SECONDS = 5.0
log = logging.getLogger("app")


class RequestMiddleware:
    """Request id, metrics and one JSON log line per request, as plain ASGI (no buffering)."""

    def __init__(self, app, route_names: dict, log_requests: bool, forwarded_hops: int) -> None:
        self.app = app
        self.route_names = route_names
        self.log_requests = log_requests
        self.forwarded_hops = forwarded_hops

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        request_id = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                if _REQUEST_ID.match(value):
                    request_id = value
                break
        if request_id is None:
            request_id = uuid.uuid4().hex.encode()
        scope["request_id"] = request_id
        status = 500
        started_response = False

        async def send_with_id(message):
            nonlocal status, started_response
            if message["type"] == "http.response.start":
                status = message["status"]
                started_response = True
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", request_id)]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            # Handled here rather than by Starlette's outermost handler, so the 500 still
            # carries the request id and is counted and logged like any response.
            log.exception("unhandled error (request_id=%s)", request_id.decode())
            if started_response:
                raise
            response = error_response(
                ApiError(500, "internal_error", "unexpected error", field="server")
            )
            await response(scope, receive, send_with_id)
        finally:
            route = self.route_names.get(scope.get("endpoint"), "unmatched")
            method = scope["method"]
            elapsed = time.perf_counter() - started
            metrics.http_requests_total.labels(method, route, str(status)).inc()
            metrics.http_request_duration_seconds.labels(method, route).observe(elapsed)
            if self.log_requests:
                access_log(
                    request_id=request_id.decode(), method=method, route=route, status=status,
                    duration_ms=elapsed * 1000,
                    client=client_address(scope, self.forwarded_hops),
                )


async def _api_error(request: Request, exc: ApiError) -> Response:
    return error_response(exc)


async def _http_error(request: Request, exc: HTTPException) -> Response:
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    field = "path" if exc.status_code == 404 else "method"
    return error_response(ApiError(exc.status_code, code, str(exc.detail), field=field,
                                   headers=exc.headers))


async def _client_gone(request: Request, exc: ClientDisconnect) -> Response:
    # Nobody is left to read this; the status is for the log line and the metrics.
    return error_response(ApiError(400, "client_disconnected", "client went away",
                                   field="body"))


async def _database_down(request: Request, exc: Exception) -> Response:
    return error_response(
        ApiError(503, "database_unavailable", "the database is unreachable; retry shortly",
                 field="database", headers={"Retry-After": "5"})
    )


async def _refresh_gauges(probe: DependencyProbe) -> None:
    """Every worker refreshes its pool and connectivity gauges itself: a scrape reaches one
    worker, and the others' values would otherwise be whatever they last happened to be."""
    while True:
        await probe.checks()
        await asyncio.sleep(GAUGE_REFRESH_SECONDS)


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or settings_or_exit()
    configure_logging(settings.log_level)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        app.state.started_at = time.monotonic()
        await app.state.db.open()
        await app.state.cache.start()
        metrics.forget_dead_workers()
        gauges = asyncio.ensure_future(_refresh_gauges(app.state.probe))
        # Everything alive now lives as long as the process: keep it out of the
        # collector's sight so full collections (and their pauses) stay short.
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            gauges.cancel()
            await app.state.cache.close()
            await app.state.db.close()
            if metrics.MULTIPROCESS:
                multiprocess.mark_process_dead(os.getpid())

    openapi_body = msgspec.json.encode(openapi.build(settings.app_version))

    async def openapi_json(request: Request) -> Response:
        return Response(openapi_body, media_type="application/json")

    routes = [
        *alerts.routes, *health.routes, *metrics_routes.routes,
        Route("/openapi.json", openapi_json, methods=["GET"]),
    ]
    handlers = {ApiError: _api_error, HTTPException: _http_error}
    handlers.update({exc: _database_down for exc in CONNECTION_ERRORS})
    handlers[ClientDisconnect] = _client_gone
    app = Starlette(routes=routes, exception_handlers=handlers, lifespan=lifespan)
    app.state.settings = settings
    app.state.token_bytes = settings.api_token.encode()
    app.state.db = Database(
        settings.database_url, max_size=settings.db_pool_max,
        statement_cache_size=settings.db_statement_cache_size,
        password=IamTokenPassword(settings.db_iam) if settings.db_iam else None,
    )
    app.state.cache = Cache(
        settings.redis_url,
        rate_limit=settings.rate_limit_per_minute if settings.rate_limit_enabled else 0,
        ttl_seconds=settings.cache_ttl_seconds,
    )
    app.state.probe = DependencyProbe(app.state.db, app.state.cache)
    route_names = {r.endpoint: r.path for r in routes}
    app.add_middleware(
        RequestMiddleware, route_names=route_names,
        log_requests=settings.log_level in ("DEBUG", "INFO"),
        forwarded_hops=settings.forwarded_hops,
    )
    return app
