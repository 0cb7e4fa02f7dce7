"""Fixtures for the API tests: a migrated database and a served app on loopback."""

from __future__ import annotations

import pytest

from tests.support.app_server import TEST_TOKEN, AppServer, app_env, run_app

AUTH = {"Authorization": f"Bearer {TEST_TOKEN}"}


def make_alert(**overrides):
    body = {"message": "River level above flood stage", "type": "flood", "priority": "high",
            "region": "eu-west"}
    body.update(overrides)
    return body


@pytest.fixture(scope="session")
def migrated(pg, redis_server):
    result = run_app("migrate", app_env(pg.url, redis_server.url))
    assert result.returncode == 0, result.stderr
    return pg


@pytest.fixture(scope="session")
def server(migrated, redis_server):
    """One app process for read/write tests, with the rate limit out of the way."""
    srv = AppServer(app_env(migrated.url, redis_server.url, RATE_LIMIT_PER_MINUTE="1000000"))
    srv.start("/health/ready")
    yield srv
    srv.stop()


@pytest.fixture
def clean(migrated, redis_server):
    migrated.psql("TRUNCATE alerts")
    # Wipe rate limits and cached responses, but move the cache generation forward and
    # announce it, as a write would: replicas then drop their local copies at once.
    generation = redis_server.cli("INCR", "alerts:gen")
    redis_server.cli("FLUSHALL")
    redis_server.cli("SET", "alerts:gen", generation)
    redis_server.cli("PUBLISH", "alerts:gen", generation)


@pytest.fixture
def client(server, clean):
    with server.client() as c:
        yield c
