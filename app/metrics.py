"""Prometheus metrics, correct across several worker processes.

`python -m app serve` always points PROMETHEUS_MULTIPROC_DIR at a fresh directory before
this module is imported, so every worker writes its samples to shared memory-mapped files
and `/metrics` aggregates all of them, whichever worker answers the scrape.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))

http_requests_total = Counter(
    "http_requests_total", "HTTP requests answered.", ["method", "route", "status"]
)
http_request_duration_seconds = Histogram(
    "http_request_duration_seconds",
    "Time from request start to the last response byte.",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
alerts_created_total = Counter(
    "alerts_created_total", "Alerts stored.", ["type", "priority"]
)
cache_lookups_total = Counter(
    "cache_lookups_total",
    "Response cache lookups by result (hit, miss, bypass when Redis is down).",
    ["result"],
)
rate_limit_rejections_total = Counter(
    "rate_limit_rejections_total", "Requests answered 429 by the per-client rate limit."
)
rate_limit_fail_open_total = Counter(
    "rate_limit_fail_open_total", "Requests let through unchecked because Redis was unreachable."
)
# Pool gauges sum over live workers; redis_connected is the worst worker's view.
db_pool_size = Gauge(
    "db_pool_size", "Open PostgreSQL connections in the pool.", multiprocess_mode="livesum"
)
db_pool_idle = Gauge(
    "db_pool_idle", "Idle PostgreSQL connections in the pool.", multiprocess_mode="livesum"
)
db_pool_max = Gauge(
    "db_pool_max", "Most PostgreSQL connections the pool may open.", multiprocess_mode="livesum"
)
db_connected = Gauge(
    "db_connected", "1 when the last PostgreSQL check succeeded.", multiprocess_mode="livemin"
)
redis_connected = Gauge(
    "redis_connected", "1 when the last Redis call succeeded.", multiprocess_mode="livemin"
)


TYPE_LABELS_MAX = 64
_type_labels: set[str] = set()


def type_label(alert_type: str) -> str:
    """`type` is client-chosen: past TYPE_LABELS_MAX distinct values per process, new ones
    are counted as "other" so metrics files and scrapes stay bounded."""
    if alert_type in _type_labels:
        return alert_type
    if len(_type_labels) < TYPE_LABELS_MAX:
        _type_labels.add(alert_type)
        return alert_type
    return "other"


def forget_dead_workers() -> None:
    """Drop live gauges of workers that died without a clean shutdown (uvicorn replaces
    a crashed worker; its last pool sizes would otherwise be summed forever)."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        return
    for path in os.listdir(directory):
        pid_text = path.rsplit("_", 1)[-1].removesuffix(".db")
        if not pid_text.isdigit():
            continue
        pid = int(pid_text)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            multiprocess.mark_process_dead(pid, directory)
        except PermissionError:
            pass


def render() -> tuple[bytes, str]:
    if MULTIPROCESS:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    from prometheus_client import REGISTRY

    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
