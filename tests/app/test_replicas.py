"""Two replicas sharing PostgreSQL and Redis: one cache, one rate limit."""

from __future__ import annotations

import time

import pytest

from tests.app.conftest import AUTH, make_alert
from tests.support.app_server import AppServer, app_env


@pytest.fixture
def pair(migrated, redis_server, clean):
    env = app_env(migrated.url, redis_server.url, RATE_LIMIT_PER_MINUTE="10")
    servers = [AppServer(env).start("/health/ready") for _ in range(2)]
    yield servers
    for s in servers:
        s.stop()


def test_a_write_on_one_replica_invalidates_the_others_cache(pair):
    a, b = pair
    client = {"X-Forwarded-For": "198.51.100.1"}
    with a.client(headers=client) as ca, b.client(headers=client) as cb:
        assert cb.get("/api/v1/alerts").json()["pagination"]["total"] == 0  # cached on b
        assert cb.get("/api/v1/alerts").json()["pagination"]["total"] == 0
        created = ca.post("/api/v1/alerts", json=make_alert(), headers=AUTH).json()
        assert cb.get("/api/v1/alerts").json()["pagination"]["total"] == 1
        assert cb.get(f"/api/v1/alerts/{created['id']}").json()["acknowledged"] is False
        ca.post(f"/api/v1/alerts/{created['id']}/acknowledge", headers=AUTH)
        assert cb.get(f"/api/v1/alerts/{created['id']}").json()["acknowledged"] is True


def test_the_rate_limit_is_shared_by_replicas(pair):
    """Each replica counts locally and syncs every 50 ms, so the budget is shared with a
    bounded lag: once each replica has synced, every replica refuses."""
    a, b = pair
    client = {"X-Forwarded-For": "198.51.100.2"}
    admitted = 0
    with a.client(headers=client) as ca, b.client(headers=client) as cb:
        assert [ca.get("/health/live").status_code for _ in range(3)] == [200] * 3  # not counted
        for c in (ca, ca, ca, ca, ca, ca, cb, cb, cb, cb):
            admitted += c.get("/api/v1/alerts").status_code == 200
        assert admitted == 10  # exactly the budget, spread over both replicas
        for _ in range(3):
            time.sleep(0.3)  # past a sync interval: each replica learns the shared total
            for c in (ca, cb):
                admitted += c.get("/api/v1/alerts").status_code == 200
        # At most one request per replica slips through before its first sync.
        assert admitted <= 10 + 2
        time.sleep(0.3)
        assert ca.get("/api/v1/alerts").status_code == 429
        assert cb.get("/api/v1/alerts").status_code == 429
