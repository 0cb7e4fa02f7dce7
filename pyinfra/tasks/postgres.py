"""PostgreSQL from the distribution: tuned from RAM and cores, scram-sha-256, app roles and db.

The app's roles, so a POSTGRES_PASSWORD rotation never refuses a connection:
- the owner, `postgres_user`, owns the database and every object in it, and cannot log in;
- two login roles, `<owner>_a` and `<owner>_b`, are members of it, with the owner as their
  default role (`ALTER ROLE ... SET role`), so what `migrate` creates is the owner's.

The replicas use one login role at a time. A new password goes to the other one (the one
that cannot log in), so the old role keeps working for the replicas not yet switched; the
old role loses its login and its password only once every web host of the inventory
confirmed, in this run, that its replicas use the new role and password: the same gate as
Redis's (tasks/rotation.py). A host still on the owner's login (before these roles) moves
the same way: the owner keeps its login until the gate opens.

Which role the replicas use is decided from the db host's roles, read as a fact by every
host in the same run (`with_app_login`): the role whose verifier matches the password, else
the one that cannot log in. Web and db hosts compute it from the same fact, so it agrees
in a `--limit web1` run too (which reads the db host without changing it). A function of
the password alone could not do this: it cannot tell which role the previous password is
on. With both roles logging in and neither on the new password, the previous rotation is
unfinished and some web host may use either: the deploy refuses, before any change.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import os
from collections.abc import Mapping

from pyinfra import host, inventory
from pyinfra.api import deploy
from pyinfra.facts.hardware import Cpus
from pyinfra.facts.server import LinuxDistribution
from pyinfra.operations import postgres, server, systemd

from tasks.config import Settings, SettingsError, fail
from tasks.facts import MemTotalMb, PostgresAppRoles, psql_stdin
from tasks.pki import POSTGRES_TLS_DIR, upload_server_certificate
from tasks.rotation import clients_on
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
        raise fail("postgres_version", None, f"a PostgreSQL major version such as 15: "
                   f"{key[0]} {key[1]} has no default (Debian 12 and Ubuntu 24.04 have one)")
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
    roles = app_roles(cfg)
    owner = roles.get(cfg.postgres_user) or {}
    # A new owner cannot log in; one that still can (a host from before the login roles)
    # keeps its login until every web host left it (`database_finish`).
    postgres.role(
        name=f"App owner role {cfg.postgres_user} (no login of its own)",
        role=cfg.postgres_user,
        login=bool(owner.get("login")),
        _sudo=True,
        _sudo_user="postgres",
    )
    script = login_script(cfg, roles)
    if script:
        postgres_script(f"App login role {cfg.postgres_login}: the password, a member of "
                        f"{cfg.postgres_user}", *script)  # fmt: skip
    postgres.database(
        name=f"App database {cfg.postgres_db}",
        database=cfg.postgres_db,
        owner=cfg.postgres_user,
        encoding="UTF8",
        _sudo=True,
        _sudo_user="postgres",
    )


# --- The login roles ---------------------------------------------------------------------

LOGIN_SETUP = """SELECT format('CREATE ROLE %I NOLOGIN', r) FROM unnest(ARRAY[:'login', :'other']) r
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = r) \\gexec
SELECT format('GRANT %I TO %I', :'owner', r) FROM unnest(ARRAY[:'login', :'other']) r
 WHERE NOT pg_has_role(r, :'owner', 'MEMBER') \\gexec
SELECT format('ALTER ROLE %I SET role = %L', r, :'owner') FROM unnest(ARRAY[:'login', :'other']) r
 \\gexec
"""
LOGIN_PASSWORD = (
    "SELECT format('ALTER ROLE %I WITH LOGIN PASSWORD %L', :'login', :'verifier') \\gexec\n"
)
LOGIN_ONLY = "SELECT format('ALTER ROLE %I WITH LOGIN', :'login') \\gexec\n"
RETIRE = "SELECT format('ALTER ROLE %I WITH NOLOGIN PASSWORD NULL', :'old') \\gexec\n"


def db_host():
    """The host whose PostgreSQL the app uses: the `db` group's, or this one (single host)."""
    group = inventory.get_group("db", None)
    return group[0] if group else host


def app_roles(cfg: Settings) -> dict[str, dict]:
    """The db host's app roles now (PostgresAppRoles): the same answer on every host."""
    return db_host().get_fact(PostgresAppRoles, owner=cfg.postgres_user) or {}


def with_app_login(cfg: Settings) -> Settings:
    """`cfg` with the login role the replicas use from this run on (module docstring).

    A password the db host does not have yet, in a run that leaves the db host out
    (`--limit web1`), would reach the env file and then be refused: stop first."""
    roles, password, db = app_roles(cfg), cfg.secrets["POSTGRES_PASSWORD"], db_host()
    login = app_login(roles, cfg.postgres_login_roles, password)
    if not host.state.is_host_in_limit(db) and not scram_matches(
        (roles.get(login) or {}).get("verifier"), password
    ):
        raise SettingsError(
            f"PostgreSQL: this POSTGRES_PASSWORD is new to the db host {db.name}, which this "
            f"run leaves out: its login role {login} gets it there first. Include the db host "
            f"(--limit {db.name} --limit ...), or run over every host."
        )
    return dataclasses.replace(cfg, postgres_login=login)


def _usable(role: Mapping | None) -> bool:
    return bool(role and role.get("login") and role.get("verifier"))


def app_login(roles: Mapping[str, Mapping], logins: tuple[str, str], password: str) -> str:
    """The login role that has, or gets, `password`: the one whose verifier matches it, else
    one that cannot log in (its password is no one's). Both logging in with other passwords:
    some web host may still use either, and neither can be given the new one."""
    for name in logins:
        if scram_matches((roles.get(name) or {}).get("verifier"), password):
            return name
    for name in logins:
        if not _usable(roles.get(name)):
            return name
    raise SettingsError(
        f"PostgreSQL: the previous password rotation is unfinished: both login roles "
        f"{logins[0]} and {logins[1]} still log in and neither has this POSTGRES_PASSWORD, "
        "so a web host may still use either. Deploy every web host (no --limit) with the "
        "previous POSTGRES_PASSWORD first; once it reports no old password, rotate "
        "(docs/vps.md, Rotating a password)."
    )


def old_logins(cfg: Settings, roles: Mapping[str, Mapping]) -> list[str]:
    """The app roles other than the replicas' that can still log in or keep a password."""
    names = (cfg.postgres_user, *cfg.postgres_login_roles)
    return [name for name in names if name != cfg.postgres_login
            and any((roles.get(name) or {}).get(key) for key in ("login", "verifier"))]  # fmt: skip


def login_script(cfg: Settings, roles: Mapping[str, Mapping]) -> tuple[str, dict] | None:
    """The psql script and its variables that make `cfg.postgres_login` log in with the
    password, both login roles members of the owner with it as their default role; None
    when the db host is already so (a converged host stays unchanged)."""
    login = cfg.postgres_login
    (other,) = [name for name in cfg.postgres_login_roles if name != login]
    current = roles.get(login) or {}
    verifier = role_password(current.get("verifier"), cfg.secrets["POSTGRES_PASSWORD"])
    ready = all(
        (roles.get(name) or {}).get("member") and (roles.get(name) or {}).get("default_role")
        for name in (login, other)
    )
    if ready and verifier is None and current.get("login"):
        return None
    variables = {"owner": cfg.postgres_user, "login": login, "other": other}
    if verifier is None:
        return LOGIN_SETUP + LOGIN_ONLY, variables
    return LOGIN_SETUP + LOGIN_PASSWORD, {**variables, "verifier": verifier}


def retire_script(old: list[str]) -> tuple[str, dict]:
    """The psql script that takes each old role's login and password away."""
    script = "".join(RETIRE.replace(":'old'", f":'old{i}'") for i in range(len(old)))
    return script, {f"old{i}": name for i, name in enumerate(old)}


def postgres_script(name: str, script: str, variables: dict[str, str], **kwargs):
    """One transaction of `script` as postgres. The only secret it carries is a SCRAM
    verifier (postgres.role would put the password on psql's command line, which /proc and
    sudo's journal show)."""
    return server.shell(
        name=name,
        commands=[psql_stdin(script, variables, options="-XAtq -1")],
        _sudo=True,
        _sudo_user="postgres",
        **kwargs,
    )


@deploy("PostgreSQL: old login dropped")
def database_finish(cfg: Settings) -> None:
    """After every web host's replicas use the new login role and password: the old roles
    lose their login and password. Decided when it runs (tasks/rotation.py): until then the
    old role keeps working for the replicas not yet switched."""
    old = old_logins(cfg, app_roles(cfg))
    if not old:
        return
    postgres_script(
        f"Old login role(s) {', '.join(old)}: no login, no password (once every web host "
        f"uses {cfg.postgres_login})",
        *retire_script(old),
        _if=clients_on(cfg, "postgres", cfg.postgres_generation, label="PostgreSQL"),
    )
