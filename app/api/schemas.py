"""Request and response shapes. msgspec validates and encodes them in one pass."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

Priority = Literal["critical", "high", "medium", "low"]
PRIORITIES: tuple[str, ...] = ("critical", "high", "medium", "low")
# A slug keeps `type` usable as a metrics label without unbounded cardinality surprises.
TYPE_PATTERN = "^[a-z0-9][a-z0-9_-]{0,31}$"
Slug = Annotated[str, Meta(pattern=TYPE_PATTERN, description="Lowercase slug, 1-32 chars.")]
# PostgreSQL text can't hold NUL, so it is refused at the edge as a validation error.
NO_NUL = "^[^\\x00]*$"
Region = Annotated[str, Meta(min_length=1, max_length=64, pattern=NO_NUL)]


class Coordinates(msgspec.Struct, forbid_unknown_fields=True):
    latitude: Annotated[float, Meta(ge=-90, le=90)]
    longitude: Annotated[float, Meta(ge=-180, le=180)]


class AlertCreate(msgspec.Struct, forbid_unknown_fields=True):
    """Body of POST /api/v1/alerts."""

    message: Annotated[str, Meta(min_length=1, max_length=2000, pattern=NO_NUL)]
    type: Slug
    priority: Priority
    region: Region
    coordinates: Coordinates | None = None


class Alert(msgspec.Struct):
    """A stored alert."""

    id: uuid.UUID
    message: str
    type: str
    priority: Priority
    region: str
    coordinates: Coordinates | None
    acknowledged: bool
    acknowledged_at: datetime | None
    created_at: datetime


class Pagination(msgspec.Struct):
    page: int
    limit: int
    total: int
    total_pages: int
    has_next: bool
    has_prev: bool


class AlertPage(msgspec.Struct):
    data: list[Alert]
    pagination: Pagination


class ErrorDetail(msgspec.Struct, omit_defaults=True):
    code: str
    message: str
    field: str | None = None


class Error(msgspec.Struct):
    error: ErrorDetail


class DependencyStatus(msgspec.Struct, omit_defaults=True):
    status: Literal["up", "down"]
    latency_ms: float | None = None
    error: str | None = None


class Readiness(msgspec.Struct):
    status: Literal["ready", "not_ready"]
    checks: dict[str, DependencyStatus]


class Health(msgspec.Struct):
    status: Literal["ok", "degraded"]
    version: str
    uptime_seconds: float
    checks: dict[str, DependencyStatus]


class Liveness(msgspec.Struct):
    status: Literal["alive"]


def alert_from_row(row) -> Alert:
    lat, lon = row["latitude"], row["longitude"]
    return Alert(
        id=row["id"],
        message=row["message"],
        type=row["type"],
        priority=row["priority"],
        region=row["region"],
        coordinates=None if lat is None else Coordinates(latitude=lat, longitude=lon),
        acknowledged=row["acknowledged"],
        acknowledged_at=row["acknowledged_at"],
        created_at=row["created_at"],
    )
