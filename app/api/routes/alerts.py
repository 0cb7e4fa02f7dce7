"""/api/v1/alerts: create, list, get and acknowledge alerts."""

from __future__ import annotations

import math
import re
from urllib.parse import urlencode

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app import metrics
from app.api.deps import alert_id, client_id, read_body, require_token
from app.api.errors import ApiError, from_validation_error
from app.api.schemas import (
    PRIORITIES,
    TYPE_PATTERN,
    AlertCreate,
    AlertPage,
    Pagination,
    alert_from_row,
)

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
MAX_PAGE = 100_000  # keeps OFFSET bounded; deeper pages are a filtering problem
_encode = msgspec.json.Encoder().encode
_decode_create = msgspec.json.Decoder(AlertCreate).decode
_type_re = re.compile(TYPE_PATTERN)
JSON = "application/json"


def _json(body: bytes, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(body, status, headers=headers, media_type=JSON)


async def _gate(request: Request, cache_key: str = ""):
    gate = await request.app.state.cache.gate(client_id(request), cache_key)
    if not gate.allowed:
        raise ApiError(
            429, "rate_limited", "too many requests; retry later", field="client",
            headers={"Retry-After": str(gate.retry_after)},
        )
    return gate


def _int_param(request: Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    # isascii: str.isdigit() also accepts '²', which int() refuses; the length bound keeps
    # int() away from its 4300-digit limit.
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 9) or not lo <= int(raw) <= hi:
        raise ApiError(
            422, "validation_error", f"{name} must be an integer from {lo} to {hi}", field=name
        )
    return int(raw)


def _list_query(request: Request) -> tuple[int, int, dict[str, str]]:
    if not request.scope["query_string"]:
        return 1, DEFAULT_LIMIT, {}  # the common first page, without parsing anything
    page = _int_param(request, "page", 1, 1, MAX_PAGE)
    limit = _int_param(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    filters: dict[str, str] = {}
    params = request.query_params
    if "type" in params:
        if not _type_re.match(params["type"]):
            raise ApiError(422, "validation_error", "type must be a lowercase slug", field="type")
        filters["type"] = params["type"]
    if "priority" in params:
        if params["priority"] not in PRIORITIES:
            raise ApiError(
                422, "validation_error", f"priority must be one of {', '.join(PRIORITIES)}",
                field="priority",
            )
        filters["priority"] = params["priority"]
    if "region" in params:
        if not 1 <= len(params["region"]) <= 64 or "\x00" in params["region"]:
            raise ApiError(
                422, "validation_error", "region must be 1-64 characters, without NUL",
                field="region",
            )
        filters["region"] = params["region"]
    return page, limit, filters


async def list_alerts(request: Request) -> Response:
    page, limit, filters = _list_query(request)
    # Canonical and escaped: a region containing "&type=" can't alias another query.
    key = f"list:{page}:{limit}:{urlencode(sorted(filters.items()))}"
    gate = await _gate(request, key)
    if gate.cached is not None:
        return _json(gate.cached)

    async def build() -> bytes:
        rows, total = await request.app.state.db.list_alerts(
            limit=limit, offset=(page - 1) * limit, filters=filters
        )
        total_pages = math.ceil(total / limit)
        return _encode(
            AlertPage(
                data=[alert_from_row(r) for r in rows],
                pagination=Pagination(
                    page=page, limit=limit, total=total, total_pages=total_pages,
                    has_next=page < total_pages, has_prev=page > 1,
                ),
            )
        )

    return _json(await request.app.state.cache.fill(gate, key, build))


async def create_alert(request: Request) -> Response:
    await _gate(request)
    require_token(request)
    raw = await read_body(request)
    try:
        alert = _decode_create(raw)
    except msgspec.ValidationError as exc:
        raise from_validation_error(exc) from None
    except msgspec.DecodeError:
        raise ApiError(
            400, "invalid_json", "request body must be a JSON object", field="body"
        ) from None
    coords = alert.coordinates
    row = await request.app.state.db.insert_alert(
        message=alert.message, type=alert.type, priority=alert.priority, region=alert.region,
        latitude=coords.latitude if coords else None,
        longitude=coords.longitude if coords else None,
    )
    await request.app.state.cache.invalidate()
    metrics.alerts_created_total.labels(metrics.type_label(alert.type), alert.priority).inc()
    stored = alert_from_row(row)
    return _json(_encode(stored), 201, {"Location": f"/api/v1/alerts/{stored.id}"})


async def get_alert(request: Request) -> Response:
    ident = alert_id(request)
    key = f"alert:{ident}"
    gate = await _gate(request, key)
    if gate.cached is not None:
        return _json(gate.cached)

    async def build() -> bytes:
        row = await request.app.state.db.get_alert(ident)
        if row is None:
            raise ApiError(404, "not_found", "no alert with this id", field="id")
        return _encode(alert_from_row(row))

    return _json(await request.app.state.cache.fill(gate, key, build))


async def acknowledge_alert(request: Request) -> Response:
    ident = alert_id(request)
    await _gate(request)
    require_token(request)
    row = await request.app.state.db.acknowledge_alert(ident)
    if row is None:
        raise ApiError(404, "not_found", "no alert with this id", field="id")
    await request.app.state.cache.invalidate()
    return _json(_encode(alert_from_row(row)))


routes = [
    Route("/api/v1/alerts", list_alerts, methods=["GET"]),
    Route("/api/v1/alerts", create_alert, methods=["POST"]),
    Route("/api/v1/alerts/{alert_id}", get_alert, methods=["GET"]),
    Route("/api/v1/alerts/{alert_id}/acknowledge", acknowledge_alert, methods=["POST"]),
]
