"""What every alerts route needs: the client's identity, the write token, a bounded body."""

from __future__ import annotations

import hmac
import uuid

from starlette.requests import ClientDisconnect, Request

from app.api.errors import ApiError


def client_address(scope, hops: int) -> str:
    """The client's address as the nearest trusted proxy saw it.

    nginx and the ALB append the peer they saw to X-Forwarded-For, so with
    FORWARDED_HOPS=n the n-th entry from the right is the one a client can't forge.
    """
    if hops:
        # The raw header list, not request.headers: this runs on every request.
        for name, value in scope["headers"]:
            if name == b"x-forwarded-for":
                parts = value.decode("latin-1").split(",")
                return parts[-min(hops, len(parts))].strip()
    client = scope.get("client")
    return client[0] if client else "unknown"


def client_id(request: Request) -> str:
    """Who the per-client rate limit counts this request against."""
    return client_address(request.scope, request.app.state.settings.forwarded_hops)


def require_token(request: Request) -> None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    expected = request.app.state.token_bytes
    # compare_digest runs in time independent of where the strings differ.
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected):
        raise ApiError(
            401, "unauthorized", "a valid bearer token is required", field="Authorization",
            headers={"WWW-Authenticate": 'Bearer realm="prodstack"'},
        )


async def read_body(request: Request) -> bytes:
    limit = request.app.state.settings.max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isascii() or not declared.isdigit()
                                 or len(declared) > 12 or int(declared) > limit):
        raise _too_large(limit)
    # The ASGI receive loop itself: Request.stream()'s async generator costs more than
    # the typical one-message body it yields.
    chunks, size, more = [], 0, True
    while more:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
        more = message.get("more_body", False)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _too_large(limit: int) -> ApiError:
    return ApiError(413, "body_too_large", f"request body exceeds {limit} bytes", field="body")


def alert_id(request: Request) -> uuid.UUID:
    raw = request.path_params["alert_id"]
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise ApiError(422, "validation_error", "id must be a UUID", field="id") from None
