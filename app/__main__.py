"""Command contract used by both deploy profiles:

    python -m app migrate   apply pending SQL migrations (advisory-locked), then exit;
                            MIGRATE_LOCK_TIMEOUT_SECONDS (10) and
                            MIGRATE_STATEMENT_TIMEOUT_SECONDS (300) bound it on the server
    python -m app migrate-stop   terminate a migrate session a deploy gave up on
    python -m app serve     serve HTTP on $PORT until SIGTERM, then drain
    python -m app schema-version   print the database's schema version (newest migration)

The whole contract, for this image and any other: docs/image-contract.md.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile

USAGE = "usage: python -m app {migrate|migrate-stop|serve|schema-version}"


def _serve() -> None:
    from app.core.config import settings_or_exit

    settings = settings_or_exit()
    # Fresh per start: stale files from a previous run would be counted again.
    metrics_dir = tempfile.mkdtemp(prefix="prodstack-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    import uvicorn

    try:
        uvicorn.run(
            "app.main:create_app",
            factory=True,
            host=os.environ.get("HOST", "0.0.0.0"),
            port=settings.port,
            workers=settings.web_concurrency,
            loop="uvloop",
            http="httptools",
            access_log=False,
            proxy_headers=False,  # the app reads X-Forwarded-For itself, by hop count
            server_header=False,
            timeout_graceful_shutdown=settings.shutdown_timeout_seconds,
            timeout_keep_alive=75,  # longer than nginx's upstream keepalive_timeout
            log_config=None,
        )
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


def _migrate() -> None:
    from app.core.config import settings_or_exit
    from app.core.logging import configure_logging
    from app.migrate import migrate

    settings = settings_or_exit()
    configure_logging(settings.log_level)
    wait = float(os.environ.get("MIGRATE_WAIT_SECONDS", "60"))
    timeouts = {
        "lock_timeout_seconds": float(os.environ.get("MIGRATE_LOCK_TIMEOUT_SECONDS", "10")),
        "statement_timeout_seconds": float(
            os.environ.get("MIGRATE_STATEMENT_TIMEOUT_SECONDS", "300")
        ),
    }
    try:
        asyncio.run(
            migrate(
                settings.database_url, wait_seconds=wait, app_role=settings.app_role, **timeouts
            )
        )
    except Exception as exc:
        print(f"migrate failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


def _migrate_stop() -> None:
    from app.core.config import settings_or_exit
    from app.migrate import stop_migrations

    settings = settings_or_exit()
    try:
        stopped = asyncio.run(stop_migrations(settings.database_url))
    except Exception as exc:
        print(f"migrate-stop failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    print(f"terminated {stopped} migrate session(s)", file=sys.stderr)


def _schema_version() -> None:
    from app.core.config import settings_or_exit
    from app.migrate import schema_version

    settings = settings_or_exit()
    try:
        print(asyncio.run(schema_version(settings.database_url)) or "")
    except Exception as exc:
        print(f"schema-version failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


def main(argv: list[str]) -> None:
    commands = {"serve": _serve, "migrate": _migrate, "migrate-stop": _migrate_stop,
                "schema-version": _schema_version}  # fmt: skip
    if len(argv) != 1 or argv[0] not in commands:
        print(USAGE, file=sys.stderr)
        raise SystemExit(2)
    commands[argv[0]]()


if __name__ == "__main__":
    main(sys.argv[1:])
