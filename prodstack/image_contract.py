"""The image contract: what prodstack asks of an API image, and what it gives one.

This module is the one place it is written down. The VPS deploy renders its values into
release.json (pyinfra/templates/release.j2.json), `prodstack check-image` checks an image
against every clause, and docs/image-contract.md holds `markdown()`'s table verbatim (a
test keeps the two equal: `python -m prodstack.image_contract` prints it).
"""

from __future__ import annotations

from dataclasses import dataclass

# HTTP port prodstack sets in $PORT; the image must listen on $PORT, whatever it is.
PORT = 8000
HEALTH_LIVE = "/health/live"
HEALTH_READY = "/health/ready"
METRICS = "/metrics"
# Arguments given to the image (its ENTRYPOINT receives them as its command).
SERVE = "serve"
MIGRATE = "migrate"
SCHEMA_VERSION = "schema-version"
# After SIGTERM the container has this long to finish in-flight requests and exit 0,
# then it is killed (docker --stop-timeout on a VPS, the task's stopTimeout on ECS).
STOP_TIMEOUT_SECONDS = 30
# A new container must answer HEALTH_READY within this long (ready_timeout_seconds).
READY_TIMEOUT_SECONDS = 60
# The only writable path: a tmpfs, size-limited, noexec.
WRITABLE_PATH = "/tmp"
TMPFS_SIZE_MB = 64


@dataclass(frozen=True)
class EnvVar:
    name: str
    meaning: str
    vps: str  # always | optional | no
    cloud: str


ENVIRONMENT: tuple[EnvVar, ...] = (
    EnvVar("DATABASE_URL", "PostgreSQL URL, `postgresql://user:password@host:port/db?sslmode=`"
           "...; on a split VPS layout `sslmode=verify-full&sslrootcert=<CA file>`",
           "always", "no"),
    EnvVar("DB_HOST, DB_PORT, DB_NAME, DB_USER, DB_PASSWORD, DB_SSLMODE, DB_SSLROOTCERT",
           "the same, in parts: RDS (or RDS Proxy) with `verify-full` against the CA bundle "
           "path given", "no", "always"),
    EnvVar("REDIS_URL", "Redis URL, `redis://user:password@host:port/0` (`rediss://...?"
           "ssl_ca_certs=<CA file>` when Redis speaks TLS)", "always", "no"),
    EnvVar("REDIS_HOST, REDIS_PORT, REDIS_PASSWORD, REDIS_TLS", "the same, in parts "
           "(ElastiCache, TLS on)", "no", "always"),
    EnvVar("API_TOKEN", "the bearer token clients send (a secret)", "always", "always"),
    EnvVar("PORT", f"the port to listen on ({PORT})", "always", "always"),
    EnvVar("FORWARDED_HOPS", "proxies in front that append to X-Forwarded-For (VPS: nginx, "
           "1; cloud: 2 behind CloudFront and the ALB)", "always", "always"),
    EnvVar("LOG_LEVEL, RATE_LIMIT_PER_MINUTE", "log level; the app's own per-client limit",
           "always", "always"),
)


@dataclass(frozen=True)
class Clause:
    """One thing an image must do; `check` is the line `prodstack check-image` prints."""

    name: str
    rule: str
    optional: bool = False


CLAUSES: tuple[Clause, ...] = (
    Clause("non-root", "runs as a numeric non-root user (`USER 10001:10001`); no capabilities "
           "are granted (`--cap-drop ALL`, `no-new-privileges`)"),
    Clause("migrate", f"`IMAGE {MIGRATE}` applies pending migrations to the database its "
           "environment names and exits 0; running it again changes nothing (it runs once "
           "per deploy, before any new container starts, and may run while the old version "
           "serves)"),
    Clause("schema-version", f"`IMAGE {SCHEMA_VERSION}` prints the database's schema version "
           "(one line; versions compare as numbers, else in name order) and exits 0. Each "
           "release records it, so a rollback to a release older than the schema is refused",
           optional=True),
    Clause("live", f"`IMAGE {SERVE}` listens on $PORT; `GET {HEALTH_LIVE}` answers 200 while "
           "the process runs, without touching PostgreSQL or Redis"),
    Clause("ready", f"`GET {HEALTH_READY}` answers 200 only when PostgreSQL and Redis answer "
           f"(503 otherwise); traffic is routed only after it, within {READY_TIMEOUT_SECONDS} s"),
    Clause("metrics", f"`GET {METRICS}` answers Prometheus text (scraped on the VPS)",
           optional=True),
    Clause("read-only root", f"serves with a read-only root filesystem; only {WRITABLE_PATH} "
           f"(a {TMPFS_SIZE_MB} MB tmpfs) is writable"),
    Clause("sigterm", f"on SIGTERM, finishes in-flight requests and exits 0 within "
           f"{STOP_TIMEOUT_SECONDS} s (then it is killed)"),
)


def markdown() -> str:
    """The contract as docs/image-contract.md shows it."""
    lines = ["| Clause | The image must | |", "|---|---|---|"]
    for clause in CLAUSES:
        lines.append(f"| {clause.name} | {clause.rule} | "
                     f"{'optional' if clause.optional else 'required'} |")  # fmt: skip
    lines += ["", "| Variable | Meaning | VPS | cloud |", "|---|---|---|---|"]
    for var in ENVIRONMENT:
        names = ", ".join(f"`{name}`" for name in var.name.split(", "))
        lines.append(f"| {names} | {var.meaning} | {var.vps} | {var.cloud} |")
    return "\n".join(lines) + "\n"


def release_settings() -> dict[str, int]:
    """The contract's values the VPS release script reads from release.json."""
    return {"container_port": PORT, "stop_timeout_seconds": STOP_TIMEOUT_SECONDS,
            "tmpfs_size_mb": TMPFS_SIZE_MB}  # fmt: skip


if __name__ == "__main__":
    print(markdown(), end="")
