"""Metrics across worker processes, JSON request logs, request ids, and no secrets in logs."""

from __future__ import annotations

import json
import re

import pytest

from tests.app.conftest import AUTH, make_alert
from tests.support.app_server import TEST_TOKEN, AppServer, app_env


def sample(text: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"^{name}\{{(.*)\}} (\S+)$", line)
        if match:
            have = ",".join(sorted(match.group(1).split(",")))
            if have == want:
                total += float(match.group(2))
    return total


@pytest.fixture
def two_workers(migrated, redis_server, clean):
    srv = AppServer(app_env(migrated.url, redis_server.url, WEB_CONCURRENCY="2",
                            RATE_LIMIT_PER_MINUTE="1000000"))
    srv.start("/health/ready")
    yield srv
    srv.stop()


def test_metrics_count_requests_across_workers(two_workers):
    n = 60
    with two_workers.client() as c:
        for _ in range(n):
            # A new connection each time spreads requests over both workers.
            with two_workers.client() as fresh:
                assert fresh.get("/api/v1/alerts").status_code == 200
        for _ in range(3):
            c.post("/api/v1/alerts", json=make_alert(type="quake", priority="critical"),
                   headers=AUTH)
        c.get("/api/v1/alerts/not-a-uuid")
        # Whichever worker answers the scrape, the totals are the same.
        scrapes = [c.get("/metrics").text for _ in range(4)]
    pids = {line.split()[-1] for line in two_workers.logs().splitlines()
            if "Started server process" in line}
    assert len(pids) >= 2
    for text in scrapes:
        assert sample(text, "http_requests_total", method="GET", route="/api/v1/alerts",
                      status="200") == n
        assert sample(text, "http_requests_total", method="POST", route="/api/v1/alerts",
                      status="201") == 3
        assert sample(text, "http_requests_total", method="GET",
                      route="/api/v1/alerts/{alert_id}", status="422") == 1
        assert sample(text, "alerts_created_total", type="quake", priority="critical") == 3
        assert sample(text, "http_request_duration_seconds_count", method="GET",
                      route="/api/v1/alerts") == n
        for gauge in ("db_pool_size", "db_pool_max", "redis_connected"):
            assert re.search(rf"^{gauge} \S+$", text, re.M), gauge


def request_lines(server: AppServer) -> list[dict]:
    out = []
    for line in server.logs().splitlines():
        entry = json.loads(line)  # every line is JSON
        if entry.get("msg") == "request":
            out.append(entry)
    return out


def test_one_json_line_per_request_with_request_id(server, client):
    given = client.get("/api/v1/alerts", headers={"X-Request-ID": "trace-abc.123"})
    assert given.headers["x-request-id"] == "trace-abc.123"
    generated = client.get("/api/v1/alerts/00000000-0000-0000-0000-000000000000")
    rid = generated.headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", rid)
    hostile = client.get("/api/v1/alerts", headers={"X-Request-ID": "bad id;" + "x" * 200})
    assert re.fullmatch(r"[0-9a-f]{32}", hostile.headers["x-request-id"])
    lines = {entry["request_id"]: entry for entry in request_lines(server)}
    assert lines["trace-abc.123"]["route"] == "/api/v1/alerts"
    entry = lines[rid]
    assert entry["route"] == "/api/v1/alerts/{alert_id}" and entry["status"] == 404
    assert entry["method"] == "GET" and entry["level"] == "info"
    assert isinstance(entry["duration_ms"], float) and entry["timestamp"].endswith("+00:00")


def test_secrets_never_reach_the_logs(migrated, redis_server, clean):
    srv = AppServer(app_env(migrated.url, redis_server.url))
    srv.start("/health/ready")
    try:
        with srv.client() as c:
            c.post("/api/v1/alerts", json=make_alert(), headers=AUTH)
            c.post("/api/v1/alerts", json=make_alert(),
                   headers={"Authorization": "Bearer wrong-token-guess-00000"})
            c.get("/health")
    finally:
        srv.terminate()
        logs = srv.logs()
        srv.stop()
    for secret in (TEST_TOKEN, "wrong-token-guess", migrated.password, redis_server.password):
        assert secret not in logs
