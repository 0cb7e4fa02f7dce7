"""Session-wide real services: one PostgreSQL and one Redis for the app tests."""

from __future__ import annotations

import pytest

from tests.support.services import PostgresServer, RedisServer


@pytest.fixture(scope="session")
def pg():
    server = PostgresServer()
    yield server
    server.close()


@pytest.fixture(scope="session")
def redis_server():
    server = RedisServer()
    yield server
    server.close()
