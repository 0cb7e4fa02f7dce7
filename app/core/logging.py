"""JSON logs on stdout: one line per request, and the same shape for application events."""

from __future__ import annotations

import logging
import os
import time
from datetime import UTC, datetime

import msgspec

_encode = msgspec.json.Encoder().encode
_STDOUT = 1


_second: tuple[int, str] = (-1, "")


def _timestamp(epoch: float) -> str:
    """ISO 8601 UTC with milliseconds. The part up to the second is formatted once per
    second: at thousands of lines a second, datetime formatting showed up in profiles."""
    global _second
    whole = int(epoch)
    if _second[0] != whole:
        _second = (whole, datetime.fromtimestamp(whole, UTC).strftime("%Y-%m-%dT%H:%M:%S"))
    return f"{_second[1]}.{int((epoch - whole) * 1000):03d}+00:00"


def write_line(record: dict) -> None:
    # One write(2) per line keeps lines whole when several workers share stdout.
    os.write(_STDOUT, _encode(record) + b"\n")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "timestamp": _timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return _encode(entry).decode()


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # The request middleware writes the access line; uvicorn's own would duplicate it.
    logging.getLogger("uvicorn.access").disabled = True
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True


def access_log(
    *, request_id: str, method: str, route: str, status: int, duration_ms: float, client: str
) -> None:
    write_line(
        {
            "timestamp": _timestamp(time.time()),
            "level": "info",
            "msg": "request",
            "request_id": request_id,
            "method": method,
            "route": route,
            "status": status,
            "duration_ms": round(duration_ms, 2),
            "client": client,
        }
    )
