"""Session-wide real services: one PostgreSQL and one Redis for the app tests."""

from __future__ import annotations

import pytest

from prodstack.local_services import PostgresServer, RedisServer


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


@pytest.fixture(scope="session")
def docker_engine():
    from tests.support.docker import ensure_dockerd

    ensure_dockerd()


@pytest.fixture(scope="session")
def app_image(docker_engine):
    """The API image, built once per session from app/Dockerfile on a Debian-built base."""
    from tests.support.docker import build_app_image

    return build_app_image()
