"""JSON error responses. Every client mistake names the field it is about."""

from __future__ import annotations

import re

import msgspec
from starlette.responses import Response

from app.api.schemas import Error, ErrorDetail

_encode = msgspec.json.Encoder().encode
_PATH = re.compile(r"at `\$\.?([^`]*)`")


class ApiError(Exception):
    def __init__(
        self, status: int, code: str, message: str, *, field: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field
        self.headers = headers


def error_response(exc: ApiError) -> Response:
    body = _encode(Error(error=ErrorDetail(code=exc.code, message=exc.message, field=exc.field)))
    return Response(body, exc.status, headers=exc.headers, media_type="application/json")


def from_validation_error(exc: msgspec.ValidationError) -> ApiError:
    """Turn msgspec's 'Expected `str`, got `int` - at `$.message`' into a named field."""
    text = str(exc)
    match = _PATH.search(text)
    field = match.group(1) if match else None
    if field is None and "missing required field" in text:
        missing = re.search(r"field `([^`]+)`", text)
        field = missing.group(1) if missing else None
    elif field is not None and "missing required field" in text:
        missing = re.search(r"field `([^`]+)`", text)
        if missing:
            field = f"{field}.{missing.group(1)}"
    elif field is None and "unknown field" in text:
        unknown = re.search(r"field `([^`]+)`", text)
        field = unknown.group(1) if unknown else None
    return ApiError(422, "validation_error", text, field=field or "body")
