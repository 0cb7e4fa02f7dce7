"""The OpenAPI 3.0 document served at /openapi.json, generated from the msgspec schemas."""

from __future__ import annotations

import msgspec

from app.api.routes.alerts import DEFAULT_LIMIT, MAX_LIMIT, MAX_PAGE
from app.api.schemas import (
    NO_NUL,
    PRIORITIES,
    TYPE_PATTERN,
    Alert,
    AlertCreate,
    AlertPage,
    Error,
    Health,
    Liveness,
    Readiness,
)

REF = "#/components/schemas/{name}"


def _ref(name: str) -> dict:
    return {"$ref": REF.format(name=name)}


def _json(schema: str, description: str, headers: dict | None = None) -> dict:
    out = {"description": description, "content": {"application/json": {"schema": _ref(schema)}}}
    if headers:
        out["headers"] = headers
    return out


def _errors(*codes: int) -> dict:
    text = {
        400: "The body is not JSON.",
        401: "Missing or wrong bearer token.",
        404: "No alert with this id.",
        413: "The body exceeds the size limit.",
        422: "A field or parameter is invalid; `error.field` names it.",
        429: "The client's rate limit is spent.",
        503: "PostgreSQL is unreachable.",
    }
    out = {str(c): _json("Error", text[c]) for c in codes}
    if 429 in codes:
        out["429"]["headers"] = {
            "Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait."}
        }
    return out


def build(version: str) -> dict:
    _, components = msgspec.json.schema_components(
        [AlertCreate, Alert, AlertPage, Error, Health, Readiness, Liveness], ref_template=REF
    )
    id_param = {
        "name": "alert_id", "in": "path", "required": True,
        "schema": {"type": "string", "format": "uuid"},
    }
    bearer = [{"bearer": []}]
    return {
        "openapi": "3.0.3",
        "info": {"title": "prodstack alerts API", "version": version},
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "paths": {
            "/api/v1/alerts": {
                "get": {
                    "summary": "List alerts, newest first.",
                    "parameters": [
                        {"name": "page", "in": "query",
                         "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE,
                                    "default": 1}},
                        {"name": "limit", "in": "query",
                         "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT,
                                    "default": DEFAULT_LIMIT}},
                        {"name": "type", "in": "query",
                         "schema": {"type": "string", "pattern": TYPE_PATTERN}},
                        {"name": "priority", "in": "query",
                         "schema": {"type": "string", "enum": list(PRIORITIES)}},
                        {"name": "region", "in": "query",
                         "schema": {"type": "string", "minLength": 1, "maxLength": 64,
                                    "pattern": NO_NUL}},
                    ],
                    "responses": {"200": _json("AlertPage", "A page of alerts."),
                                  **_errors(422, 429, 503)},
                },
                "post": {
                    "summary": "Store an alert.",
                    "security": bearer,
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("AlertCreate")}},
                    },
                    "responses": {"201": _json("Alert", "The stored alert."),
                                  **_errors(400, 401, 413, 422, 429, 503)},
                },
            },
            "/api/v1/alerts/{alert_id}": {
                "get": {
                    "summary": "One alert.",
                    "parameters": [id_param],
                    "responses": {"200": _json("Alert", "The alert."),
                                  **_errors(404, 422, 429, 503)},
                },
            },
            "/api/v1/alerts/{alert_id}/acknowledge": {
                "post": {
                    "summary": "Acknowledge an alert; acknowledging again changes nothing.",
                    "security": bearer,
                    "parameters": [id_param],
                    "responses": {"200": _json("Alert", "The acknowledged alert."),
                                  **_errors(401, 404, 422, 429, 503)},
                },
            },
            "/health/live": {"get": {"summary": "The process is up.",
                                     "responses": {"200": _json("Liveness", "Alive.")}}},
            "/health/ready": {"get": {"summary": "PostgreSQL and Redis answer.", "responses": {
                "200": _json("Readiness", "Ready for traffic."),
                "503": _json("Readiness", "A dependency is down; `checks` says which.")}}},
            "/health": {"get": {"summary": "Version, uptime and dependency status.", "responses": {
                "200": _json("Health", "All dependencies up."),
                "503": _json("Health", "A dependency is down.")}}},
            "/metrics": {"get": {"summary": "Prometheus metrics.", "responses": {
                "200": {"description": "Prometheus text format.",
                        "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
        },
    }
