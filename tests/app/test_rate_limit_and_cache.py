"""The Redis-backed per-client rate limit and the list cache."""

from __future__ import annotations

import re
import time

import pytest

from app.cache import RATE_WINDOW_SECONDS
from tests.app.conftest import AUTH, make_alert
from tests.support.app_server import AppServer, app_env


@pytest.fixture
def limited(migrated, redis_server, clean):
    srv = AppServer(app_env(migrated.url, redis_server.url, RATE_LIMIT_PER_MINUTE="5"))
    srv.start("/health/ready")
    yield srv
    srv.stop()


def _start_of_a_window(margin_s: float = 15) -> None:
    """Windows are wall-clock minutes: a burst that straddles a boundary gets a fresh budget
    half way, so start the burst where the window has at least `margin_s` left."""
    left = RATE_WINDOW_SECONDS - time.time() % RATE_WINDOW_SECONDS
    if left < margin_s:
        time.sleep(left + 0.1)


def test_rate_limit_answers_429_with_retry_after(limited):
    # A burst that still straddles a window (a machine so loaded that six requests outlast
    # the margin) gets a fresh budget half way: it is run again, as a new client.
    for attempt in range(3):
        _start_of_a_window()
        window = time.time() // RATE_WINDOW_SECONDS
        with limited.client(headers={"X-Forwarded-For": f"203.0.113.{7 + attempt}"}) as c:
            statuses = [c.get("/api/v1/alerts").status_code for _ in range(5)]
            resp = c.get("/api/v1/alerts")
            write = c.post("/api/v1/alerts", json=make_alert(), headers=AUTH)
            health = c.get("/health/ready")
        if time.time() // RATE_WINDOW_SECONDS != window:
            continue
        assert statuses == [200] * 5
        assert resp.status_code == 429
        assert 1 <= int(resp.headers["retry-after"]) <= 60
        assert resp.json()["error"]["code"] == "rate_limited"
        # Writes and reads share the budget.
        assert write.status_code == 429
        # Health is for load balancers, never rate limited.
        assert health.status_code == 200
        return
    pytest.fail("three bursts in a row straddled a rate-limit window")


def test_rate_limit_is_per_client(limited):
    _start_of_a_window()
    with limited.client() as c:
        for _ in range(6):
            c.get("/api/v1/alerts", headers={"X-Forwarded-For": "203.0.113.8"})
        other = c.get("/api/v1/alerts", headers={"X-Forwarded-For": "203.0.113.9"})
        assert other.status_code == 200


def test_forged_forwarded_for_does_not_buy_budget(limited):
    """nginx appends the real peer last; a client-supplied first entry is ignored."""
    with limited.client() as c:
        statuses = [
            c.get(
                "/api/v1/alerts", headers={"X-Forwarded-For": f"10.0.0.{i}, 203.0.113.10"}
            ).status_code
            for i in range(6)
        ]
    assert statuses[-1] == 429


def cache_hits(client) -> float:
    match = re.search(
        r'^cache_lookups_total\{result="hit"\} (\S+)$', client.get("/metrics").text, re.M
    )
    return float(match.group(1)) if match else 0.0


def test_list_is_served_from_cache_until_a_write(client, migrated):
    client.post("/api/v1/alerts", json=make_alert(message="first"), headers=AUTH)
    assert client.get("/api/v1/alerts").json()["pagination"]["total"] == 1
    hits = cache_hits(client)
    # A row written behind the API's back is invisible while the cached page lives...
    migrated.psql(
        "INSERT INTO alerts (id, message, type, priority, region) "
        "VALUES (gen_random_uuid(), 'sideways', 'flood', 'low', 'eu-west')"
    )
    assert client.get("/api/v1/alerts").json()["pagination"]["total"] == 1
    assert cache_hits(client) == hits + 1
    # ...and every API write invalidates every cached page at once.
    created = client.post("/api/v1/alerts", json=make_alert(message="third"), headers=AUTH)
    assert client.get("/api/v1/alerts").json()["pagination"]["total"] == 3
    client.get("/api/v1/alerts", params={"priority": "high"})
    client.post(f"/api/v1/alerts/{created.json()['id']}/acknowledge", headers=AUTH)
    page = client.get("/api/v1/alerts", params={"priority": "high"}).json()
    assert any(a["acknowledged"] for a in page["data"])


def test_same_query_in_any_order_shares_a_cache_entry(client):
    client.get("/api/v1/alerts", params={"priority": "low", "region": "x"})
    hits = cache_hits(client)
    client.get("/api/v1/alerts?region=x&priority=low")
    assert cache_hits(client) == hits + 1


def test_a_crafted_filter_value_cannot_alias_another_query(client):
    client.post("/api/v1/alerts", json=make_alert(region="x", type="y"), headers=AUTH)
    crafted = client.get("/api/v1/alerts", params={"region": "x&type=y"}).json()
    assert crafted["pagination"]["total"] == 0  # cached under its own, escaped key
    real = client.get("/api/v1/alerts", params={"region": "x", "type": "y"}).json()
    assert real["pagination"]["total"] == 1


def test_a_flood_of_health_checks_shares_one_database_connection(server, clean):
    import asyncio

    import httpx

    async def flood():
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as c:
            return await asyncio.gather(*(c.get("/health/ready") for _ in range(60)))

    responses = asyncio.run(flood())
    assert {r.status_code for r in responses} == {200}
    with server.client() as c:
        pool = re.search(r"^db_pool_size (\S+)$", c.get("/metrics").text, re.M)
    assert float(pool.group(1)) <= 2  # one for the shared check (and one if a list ran)
