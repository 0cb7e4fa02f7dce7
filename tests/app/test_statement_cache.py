"""DB_STATEMENT_CACHE_SIZE against a real PostgreSQL: 0 (what the cloud stack sets behind
RDS Proxy) leaves no named prepared statement on the server connection, so the proxy can
multiplex it; asyncpg's default of 100 leaves one per distinct query, which pins the
connection on a proxy (RDS user guide, rds-proxy-pinning.html)."""

from __future__ import annotations

import asyncio

import pytest

from app.core.config import load_settings
from app.main import create_app


async def _named_statements_after_queries(settings) -> list[str]:
    db = create_app(settings).state.db  # the app's own Database, built from settings
    await db.open()
    try:
        for _ in range(3):
            assert await db._run("fetchval", "SELECT $1::int + 1", 41) == 42
        assert db.pool.get_size() == 1  # one connection: the one that ran the queries
        async with db.pool.acquire() as conn:
            rows = await conn.fetch("SELECT name FROM pg_prepared_statements")
        return [r["name"] for r in rows]
    finally:
        await db.close()


def _settings(pg, **env):
    return load_settings({"DATABASE_URL": pg.url, "REDIS_URL": "redis://127.0.0.1:1/0",
                          "API_TOKEN": "t" * 32, "DB_POOL_MAX": "1", **env})


def test_statement_cache_off_leaves_nothing_for_a_proxy_to_pin(pg):
    settings = _settings(pg, DB_STATEMENT_CACHE_SIZE="0")
    assert settings.db_statement_cache_size == 0
    assert asyncio.run(_named_statements_after_queries(settings)) == []


def test_default_cache_prepares_named_statements_on_the_server(pg):
    """The control: without the setting the same queries leave a named statement, so the
    test above can tell the two apart."""
    settings = _settings(pg)
    assert settings.db_statement_cache_size == 100
    assert asyncio.run(_named_statements_after_queries(settings)) != []


@pytest.mark.parametrize("value", ["-1", "10001", "off"])
def test_statement_cache_size_out_of_range_is_refused_by_name(pg, value):
    from app.core.config import ConfigError

    with pytest.raises(ConfigError, match="DB_STATEMENT_CACHE_SIZE"):
        _settings(pg, DB_STATEMENT_CACHE_SIZE=value)
