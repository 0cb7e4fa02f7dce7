"""Readiness follows PostgreSQL and Redis; the process never crash-loops on either."""

from __future__ import annotations

import re

import pytest

from prodstack.local_services import PostgresServer, RedisServer
from tests.app.conftest import AUTH, make_alert
from tests.support.app_server import AppServer, app_env, run_app


@pytest.fixture
def own_services():
    """Private servers: these tests stop and start them."""
    pg, redis = PostgresServer(), RedisServer()
    assert run_app("migrate", app_env(pg.url, redis.url)).returncode == 0
    yield pg, redis
    pg.close()
    redis.close()


def metric(client, name: str) -> float:
    match = re.search(rf"^{name} (\S+)$", client.get("/metrics").text, re.M)
    assert match, f"{name} missing from /metrics"
    return float(match.group(1))


def test_readiness_follows_redis_then_postgres(own_services):
    pg, redis = own_services
    srv = AppServer(app_env(pg.url, redis.url, RATE_LIMIT_PER_MINUTE="1000")).start()
    try:
        with srv.client() as c:
            srv.wait_for("/health/ready", 200)
            created = c.post("/api/v1/alerts", json=make_alert(), headers=AUTH)
            assert created.status_code == 201

            redis.stop()
            ready = c.get("/health/ready")
            assert ready.status_code == 503
            assert ready.json()["checks"]["redis"]["status"] == "down"
            assert ready.json()["checks"]["postgres"]["status"] == "up"
            # Reads go on uncached, and the rate limit fails open.
            listing = c.get("/api/v1/alerts")
            assert listing.status_code == 200 and listing.json()["pagination"]["total"] == 1
            assert c.post("/api/v1/alerts", json=make_alert(), headers=AUTH).status_code == 201
            assert metric(c, "redis_connected") == 0
            assert metric(c, "rate_limit_fail_open_total") >= 1
            assert 'cache_lookups_total{result="bypass"}' in c.get("/metrics").text

            redis.start()
            srv.wait_for("/health/ready", 200)
            assert c.get("/api/v1/alerts").status_code == 200
            assert metric(c, "redis_connected") == 1

            pg.stop()
            ready = c.get("/health/ready")
            assert ready.status_code == 503
            assert ready.json()["checks"]["postgres"]["status"] == "down"
            assert ready.json()["checks"]["redis"]["status"] == "up"
            missing = c.get(f"/api/v1/alerts/{created.json()['id']}")
            assert missing.status_code == 503
            assert missing.json()["error"]["code"] == "database_unavailable"
            assert c.get("/health/live").status_code == 200

            pg.start()
            srv.wait_for("/health/ready", 200)
            assert c.get(f"/api/v1/alerts/{created.json()['id']}").status_code == 200
    finally:
        srv.stop()


def test_starts_with_the_database_down_and_heals(own_services):
    pg, redis = own_services
    pg.stop()
    srv = AppServer(app_env(pg.url, redis.url)).start("/health/live")
    try:
        with srv.client() as c:
            ready = c.get("/health/ready")
            assert ready.status_code == 503
            assert ready.json()["checks"]["postgres"]["status"] == "down"
            assert c.get("/health").json()["status"] == "degraded"
            pg.start()
            srv.wait_for("/health/ready", 200)
            assert srv.proc.poll() is None  # never exited in between
            assert c.get("/api/v1/alerts").status_code == 200
    finally:
        srv.stop()
