"""Missing or invalid environment stops the process with one line naming the variable."""

from __future__ import annotations

import pytest

from tests.support.app_server import TEST_TOKEN, app_env, run_app

GOOD = {"DATABASE_URL": "postgresql://u:p@127.0.0.1:1/db", "REDIS_URL": "redis://127.0.0.1:1/0",
        "API_TOKEN": TEST_TOKEN}

CASES = [
    ("DATABASE_URL", None, "DATABASE_URL is required"),
    ("DATABASE_URL", "mysql://x", "DATABASE_URL must start with postgresql://"),
    ("DATABASE_URL", "postgresql://app:s3cr/t@db:5432/app", "DATABASE_URL is not a valid URL"),
    ("REDIS_URL", None, "REDIS_URL is required"),
    ("REDIS_URL", "redis://:pa#ss@cache:6379/0", "REDIS_URL is not a valid URL"),
    ("REDIS_URL", "http://x", "REDIS_URL must start with"),
    ("API_TOKEN", None, "API_TOKEN is required"),
    ("API_TOKEN", "changeme", "API_TOKEN must be a real secret"),
    ("API_TOKEN", "short", "API_TOKEN must be a real secret"),
    ("PORT", "http", "PORT must be an integer"),
    ("PORT", "70000", "PORT must be between 1 and 65535"),
    ("LOG_LEVEL", "LOUD", "LOG_LEVEL must be one of"),
    ("RATE_LIMIT_PER_MINUTE", "0", "RATE_LIMIT_PER_MINUTE must be between"),
    ("RATE_LIMIT_ENABLED", "maybe", "RATE_LIMIT_ENABLED must be true or false"),
    ("WEB_CONCURRENCY", "-1", "WEB_CONCURRENCY must be between"),
]


@pytest.mark.parametrize("var,value,message", CASES, ids=[f"{c[0]}={c[1]}" for c in CASES])
@pytest.mark.parametrize("command", ["serve", "migrate"])
def test_bad_environment(command, var, value, message):
    env = app_env("", "", **GOOD)
    env.pop(var, None)
    if value is not None:
        env[var] = value
    result = run_app(command, env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("config error: ") and message in lines[0]
    if value is not None and var != "LOG_LEVEL":
        if len(value) > 4:
            assert value not in lines[0]  # values (often secrets) are never echoed
        assert "s3cr" not in lines[0] and "pa#" not in lines[0]


def test_ecs_style_parts_compose_the_urls():
    from app.core.config import load_settings

    settings = load_settings({
        "DB_HOST": "db.internal", "DB_USER": "app", "DB_PASSWORD": "p@ss/word", "DB_NAME": "alerts",
        "REDIS_HOST": "cache.internal", "REDIS_PASSWORD": "tok", "REDIS_TLS": "true",
        "API_TOKEN": TEST_TOKEN,
    })
    assert settings.database_url == (
        "postgresql://app:p%40ss%2Fword@db.internal:5432/alerts?sslmode=require"
    )
    assert settings.redis_url == "rediss://:tok@cache.internal:6379/0"
    assert TEST_TOKEN not in repr(settings)


def test_unknown_command_prints_usage():
    result = run_app("dance", app_env("", "", **GOOD))
    assert result.returncode == 2 and "usage: python -m app" in result.stderr
