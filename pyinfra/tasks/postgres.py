"""PostgreSQL from the distribution: tuned from RAM and cores, scram-sha-256, app role and db."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.hardware import Cpus
from pyinfra.facts.server import LinuxDistribution
from pyinfra.operations import postgres, systemd

from tasks.config import Settings, SettingsError
from tasks.facts import MemTotalMb, PostgresPasswordVerifier
from tasks.pki import POSTGRES_TLS_DIR, upload_server_certificate
from tasks.templates import restart_on_change, template, unit_file

# Outside the versioned tree, so the certificate survives a major upgrade.
TLS_DIR = POSTGRES_TLS_DIR
# The distribution's PostgreSQL major version: (distribution, major release) -> version.
DISTRO_POSTGRES = {("debian", 12): "15", ("debian", 13): "17", ("ubuntu", 22): "14",
                   ("ubuntu", 24): "16"}  # fmt: skip


def postgres_version(cfg: Settings) -> str:
    if cfg.postgres_version:
        return cfg.postgres_version
    distro = host.get_fact(LinuxDistribution) or {}
    key = (str(distro.get("name", "")).lower(), int(distro.get("major") or 0))
    if key not in DISTRO_POSTGRES:
        raise SettingsError(
            f"invalid data `postgres_version` = None: no default for {key[0]} {key[1]}; "
            "set postgres_version (Debian 12 and Ubuntu 24.04 are supported)"
        )
    return DISTRO_POSTGRES[key]


def scram_matches(verifier: str | None, password: str) -> bool:
    """Whether a SCRAM-SHA-256 verifier was made from this password (checked locally)."""
    try:
        method, rest = verifier.split("$", 1)
        iterations_salt, keys = rest.split("$", 1)
        iterations, salt = iterations_salt.split(":", 1)
        stored_key, server_key = keys.split(":", 1)
    except (AttributeError, ValueError):
        return False
    if method != "SCRAM-SHA-256":
        return False
    salted = hashlib.pbkdf2_hmac(
        "sha256", password.encode(), base64.b64decode(salt), int(iterations)
    )
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    server = hmac.new(salted, b"Server Key", "sha256").digest()
    return hmac.compare_digest(
        base64.b64encode(hashlib.sha256(client_key).digest()).decode(), stored_key
    ) and hmac.compare_digest(base64.b64encode(server).decode(), server_key)


def scram_verifier(password: str, *, salt: bytes | None = None, iterations: int = 4096) -> str:
    """A SCRAM-SHA-256 verifier, as PostgreSQL stores it (RFC 5802/7677; PostgreSQL's
    defaults: a 16-byte random salt, 4096 iterations). PostgreSQL takes a verifier in place of
    a password, so the password itself never reaches a command line or a log."""
    salt = os.urandom(16) if salt is None else salt
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    stored = hashlib.sha256(hmac.new(salted, b"Client Key", "sha256").digest()).digest()
    server = hmac.new(salted, b"Server Key", "sha256").digest()
    b64 = base64.b64encode
    return (
        f"SCRAM-SHA-256${iterations}:{b64(salt).decode()}${b64(stored).decode()}:"
        f"{b64(server).decode()}"
    )


def role_password(stored: str | None, password: str) -> str | None:
    """What postgres.role gets as `password`: None when the stored verifier already matches
    (a converged host stays unchanged), else a new verifier, never the password."""
    return None if scram_matches(stored, password) else scram_verifier(password)


def tuning(memory_mb: int, cpus: int, memory_percent: int, max_connections: int) -> dict:
    """Settings after docs/targets.md's reference (8 GB, 4 cores: 2GB/6GB/512MB), scaled to
    this host.

    PostgreSQL plans for `memory_percent` of RAM (all of it on a dedicated db host, half on
    a single host shared with the API and Redis): a quarter for shared_buffers, three
    quarters as effective_cache_size, 1/16 as maintenance_work_mem.
    """
    budget = max(256, memory_mb * memory_percent // 100)
    shared = min(budget // 4, 8192)
    cpus = max(1, cpus)
    return {
        "max_connections": max_connections,
        "shared_buffers": f"{shared}MB",
        "effective_cache_size": f"{budget * 3 // 4}MB",
        "maintenance_work_mem": f"{min(budget // 16, 2048)}MB",
        "work_mem": f"{max(4, (budget - shared) // (max_connections * 3))}MB",
        "wal_buffers": "16MB",
        "checkpoint_completion_target": "0.9",
        "default_statistics_target": "100",
        "random_page_cost": "1.1",
        "effective_io_concurrency": "200",
        "min_wal_size": "1GB",
        "max_wal_size": "4GB",
        "max_worker_processes": str(max(8, cpus)),
        "max_parallel_workers": str(cpus),
        "max_parallel_workers_per_gather": str(max(1, cpus // 2)),
        "max_parallel_maintenance_workers": str(max(1, cpus // 2)),
    }


@deploy("PostgreSQL")
def database(cfg: Settings) -> None:
    version = postgres_version(cfg)
    settings = tuning(
        host.get_fact(MemTotalMb) or 1024,
        host.get_fact(Cpus) or 1,
        cfg.postgres_memory_percent,
        cfg.postgres_max_connections,
    )
    unit = f"postgresql@{version}-main.service"
    tls = (
        upload_server_certificate(cfg, directory=TLS_DIR, owner="postgres", label="PostgreSQL")
        if cfg.db_tls
        else []
    )
    conf = template(
        name="postgresql.conf: listen addresses, scram-sha-256, tuning",
        src="postgresql.j2.conf",
        dest=f"/etc/postgresql/{version}/main/conf.d/prodstack.conf",
        user="postgres",
        group="postgres",
        cfg=cfg,
        settings=settings,
        tls_dir=TLS_DIR,
    )
    hba = template(
        name="pg_hba.conf: peer locally, scram-sha-256 for the app from its networks",
        src="pg_hba.j2.conf",
        dest=f"/etc/postgresql/{version}/main/pg_hba.conf",
        mode="640",
        user="postgres",
        group="postgres",
        cfg=cfg,
    )
    unit_file(
        name="Start PostgreSQL after Docker (it listens on the containers' gateway)",
        src="after-docker.j2.conf",
        dest="/etc/systemd/system/postgresql@.service.d/prodstack.conf",
        label="PostgreSQL",
        cfg=cfg,
    )
    # shared_buffers needs a restart; pg_hba.conf alone only a reload.
    restart_on_change(unit, conf.did_change, label="PostgreSQL")
    # A new certificate or pg_hba.conf alone needs only a reload.
    systemd.service(
        name="Reload PostgreSQL for the new pg_hba.conf or certificate",
        service=unit,
        reloaded=True,
        _if=lambda: (
            (hba.did_change() or any(op.did_change() for op in tls)) and not conf.did_change()
        ),
    )
    # postgres.role puts its password into a psql command line (seen in /proc and in sudo's
    # journal entries): it gets a SCRAM verifier instead, and only when the stored one
    # doesn't match, so a converged host is unchanged and rotation works.
    stored = host.get_fact(PostgresPasswordVerifier, role=cfg.postgres_user)
    postgres.role(
        name=f"App role {cfg.postgres_user}",
        role=cfg.postgres_user,
        password=role_password(stored, cfg.secrets["POSTGRES_PASSWORD"]),
        login=True,
        _sudo=True,
        _sudo_user="postgres",
    )
    postgres.database(
        name=f"App database {cfg.postgres_db}",
        database=cfg.postgres_db,
        owner=cfg.postgres_user,
        encoding="UTF8",
        _sudo=True,
        _sudo_user="postgres",
    )
