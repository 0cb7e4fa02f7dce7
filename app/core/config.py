"""Settings, parsed once from the environment at start-up (12-factor).

A missing or invalid variable stops the process with exit code 2 and one line on stderr
that names the variable; no value is ever echoed, since most of them are secrets.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
# Every integer variable: (default, lowest, highest). The one definition of what the app
# accepts; the cloud stack's config validation reads it too, so the stack never sets a
# value that makes the app exit at start-up.
INT_SETTINGS: dict[str, tuple[int, int, int]] = {
    "PORT": (8000, 1, 65535),
    "RATE_LIMIT_PER_MINUTE": (100, 1, 10_000_000),
    "CACHE_TTL_SECONDS": (5, 1, 3600),
    "WEB_CONCURRENCY": (1, 1, 64),
    "SHUTDOWN_TIMEOUT_SECONDS": (25, 1, 600),
    "DB_POOL_MAX": (10, 1, 200),
    # asyncpg's prepared-statement cache per connection (its default, 100). 0 behind RDS
    # Proxy: a named prepared statement pins the client to one database connection.
    "DB_STATEMENT_CACHE_SIZE": (100, 0, 10_000),
    "FORWARDED_HOPS": (1, 0, 10),
    "MAX_BODY_BYTES": (16 * 1024, 1024, 10 * 1024 * 1024),
}
# Values that mean "nobody set this": refused so a demo token never reaches production.
PLACEHOLDER_TOKENS = frozenset({"changeme", "changethis", "secret", "token", "password"})
MIN_TOKEN_LENGTH = 16
# PostgreSQL role names the migrate step may create: lowercase, letter or underscore
# first, at most 63 bytes, so they never need quoting in SQL.
ROLE_NAME_RE = re.compile(r"[a-z_][a-z0-9_]{0,62}")
# IAM authentication sends a signed token as the password: never without TLS.
IAM_SSLMODES = ("require", "verify-ca", "verify-full")


@dataclass(frozen=True, slots=True)
class IamAuth:
    """Where and as whom the API signs in with RDS IAM authentication tokens."""

    host: str
    port: int
    user: str
    region: str


@dataclass(frozen=True, slots=True)
class AppRole:
    """The least-privilege login role the migrate step creates or brings back in line."""

    name: str
    iam: bool


class ConfigError(Exception):
    """One or more environment variables are missing or invalid."""


@dataclass(frozen=True, slots=True)
class Settings:
    database_url: str = ""
    redis_url: str = ""
    api_token: str = ""
    port: int = 8000
    log_level: str = "INFO"
    rate_limit_per_minute: int = 100
    rate_limit_enabled: bool = True
    cache_ttl_seconds: int = 5
    web_concurrency: int = 1
    shutdown_timeout_seconds: int = 25
    db_pool_max: int = 10
    db_statement_cache_size: int = 100
    forwarded_hops: int = 1
    max_body_bytes: int = 16 * 1024
    app_version: str = "0.1.0"
    db_iam: IamAuth | None = None
    app_role: AppRole | None = None

    def __repr__(self) -> str:  # never print secrets, even by accident
        return f"Settings(port={self.port}, log_level={self.log_level!r}, ...)"


def _int(env, name: str, errors: list[str]) -> int:
    default, lo, hi = INT_SETTINGS[name]
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        errors.append(f"{name} must be an integer between {lo} and {hi}")
        return default
    if not lo <= value <= hi:
        errors.append(f"{name} must be between {lo} and {hi}")
    return value


def _bool(env, name: str, default: bool, errors: list[str]) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw == "":
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    errors.append(f"{name} must be true or false")
    return default


def _parses(url: str) -> bool:
    """True when host and port can be read. A password with an unescaped '/', '#' or '?'
    breaks parsing later, inside a driver whose error message quotes part of it."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises ValueError on a garbled authority)
    except ValueError:
        return False
    return parts.scheme == "unix" or bool(parts.hostname)


def _database_url(env, errors: list[str]) -> tuple[str, IamAuth | None]:
    """DATABASE_URL, or the DB_* parts ECS injects; with DB_IAM the URL has no
    password and the returned IamAuth says how to sign each connection's token."""
    iam = _bool(env, "DB_IAM", False, errors)
    url = env.get("DATABASE_URL", "")
    if url and not iam:
        if not url.startswith(("postgresql://", "postgres://")):
            errors.append("DATABASE_URL must start with postgresql://")
        elif not _parses(url):
            errors.append("DATABASE_URL is not a valid URL (percent-encode the password)")
        return url, None
    host, user, password = env.get("DB_HOST"), env.get("DB_USER"), env.get("DB_PASSWORD")
    port = env.get("DB_PORT", "5432")
    name = env.get("DB_NAME", "app")
    sslmode = env.get("DB_SSLMODE", "require")
    query = f"sslmode={sslmode}"
    if env.get("DB_SSLROOTCERT"):
        query += f"&sslrootcert={quote(env['DB_SSLROOTCERT'], safe='/')}"
    if iam:
        problems = []
        if url:
            problems.append("DATABASE_URL must be empty with DB_IAM (use DB_HOST, DB_USER)")
        if not (host and user):
            problems.append("DB_HOST and DB_USER are required with DB_IAM")
        if password:
            problems.append("DB_PASSWORD must be empty with DB_IAM (tokens replace it)")
        if sslmode not in IAM_SSLMODES:
            problems.append(f"DB_SSLMODE must be one of {', '.join(IAM_SSLMODES)} with "
                            "DB_IAM")
        region = env.get("AWS_REGION", "")
        if not region:
            problems.append("AWS_REGION is required with DB_IAM")
        if not port.isdigit():
            problems.append("DB_PORT must be an integer")
        errors.extend(problems)
        if problems:
            return "", None
        return (
            f"postgresql://{quote(user, safe='')}@{host}:{port}/{name}?{query}",
            IamAuth(host=host, port=int(port), user=user, region=region),
        )
    if not (host and user and password):
        errors.append("DATABASE_URL is required (or DB_HOST, DB_USER and DB_PASSWORD)")
        return "", None
    return (
        f"postgresql://{quote(user, safe='')}:{quote(password, safe='')}@{host}:{port}/"
        f"{name}?{query}",
        None,
    )


def _app_role(env, errors: list[str]) -> AppRole | None:
    """DB_APP_USER: the role `migrate` creates for the API (DB_APP_IAM: it signs in by
    IAM token, as a member of RDS's rds_iam role)."""
    name = env.get("DB_APP_USER", "")
    iam = _bool(env, "DB_APP_IAM", False, errors)
    if not name:
        if iam:
            errors.append("DB_APP_IAM needs DB_APP_USER")
        return None
    if not ROLE_NAME_RE.fullmatch(name):
        errors.append("DB_APP_USER must be lowercase letters, digits and underscores, "
                      "a letter or underscore first, at most 63 characters")
        return None
    return AppRole(name=name, iam=iam)


def _redis_url(env, errors: list[str]) -> str:
    """REDIS_URL, or REDIS_HOST/REDIS_PASSWORD/REDIS_TLS as ECS injects them."""
    url = env.get("REDIS_URL", "")
    if url:
        if not url.startswith(("redis://", "rediss://", "unix://")):
            errors.append("REDIS_URL must start with redis://, rediss:// or unix://")
        elif not _parses(url):
            errors.append("REDIS_URL is not a valid URL (percent-encode the password)")
        return url
    host = env.get("REDIS_HOST")
    if not host:
        errors.append("REDIS_URL is required (or REDIS_HOST)")
        return ""
    tls = _bool(env, "REDIS_TLS", False, errors)
    password = env.get("REDIS_PASSWORD", "")
    auth = f":{quote(password, safe='')}@" if password else ""
    return f"{'rediss' if tls else 'redis'}://{auth}{host}:{env.get('REDIS_PORT', '6379')}/0"


def load_settings(env=None) -> Settings:
    env = os.environ if env is None else env
    errors: list[str] = []
    database_url, db_iam = _database_url(env, errors)
    app_role = _app_role(env, errors)
    redis_url = _redis_url(env, errors)

    api_token = env.get("API_TOKEN", "")
    if not api_token:
        errors.append("API_TOKEN is required")
    elif api_token.lower() in PLACEHOLDER_TOKENS or len(api_token) < MIN_TOKEN_LENGTH:
        errors.append(f"API_TOKEN must be a real secret of at least {MIN_TOKEN_LENGTH} characters")

    log_level = env.get("LOG_LEVEL", "INFO").upper()
    if log_level not in LOG_LEVELS:
        errors.append(f"LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}")

    settings = Settings(
        database_url=database_url,
        redis_url=redis_url,
        api_token=api_token,
        port=_int(env, "PORT", errors),
        log_level=log_level,
        rate_limit_per_minute=_int(env, "RATE_LIMIT_PER_MINUTE", errors),
        rate_limit_enabled=_bool(env, "RATE_LIMIT_ENABLED", True, errors),
        cache_ttl_seconds=_int(env, "CACHE_TTL_SECONDS", errors),
        web_concurrency=_int(env, "WEB_CONCURRENCY", errors),
        shutdown_timeout_seconds=_int(env, "SHUTDOWN_TIMEOUT_SECONDS", errors),
        db_pool_max=_int(env, "DB_POOL_MAX", errors),
        db_statement_cache_size=_int(env, "DB_STATEMENT_CACHE_SIZE", errors),
        forwarded_hops=_int(env, "FORWARDED_HOPS", errors),
        max_body_bytes=_int(env, "MAX_BODY_BYTES", errors),
        app_version=env.get("APP_VERSION", "0.1.0") or "0.1.0",
        db_iam=db_iam,
        app_role=app_role,
    )
    if errors:
        raise ConfigError("; ".join(errors))
    return settings


def settings_or_exit() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
