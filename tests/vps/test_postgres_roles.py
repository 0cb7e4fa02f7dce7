"""The app's PostgreSQL roles (pyinfra/tasks/postgres.py) against a real PostgreSQL: an owner
that cannot log in, two login roles used in turns, so a password rotation refuses no
connection; what each step sends, run exactly as the deploy runs it (psql, variables, the
here-document), with hostile role names and passwords.

The role names below are ones tasks/config.py refuses (it takes [a-z_][a-z0-9_]*): the SQL
must not depend on that check.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import uuid
from dataclasses import replace

import asyncpg
import pytest
from tasks.config import SettingsError, settings_for
from tasks.facts import PostgresAppRoles, psql_stdin
from tasks.postgres import app_login, login_script, old_logins, retire_script, scram_verifier

from tests.support.app_server import app_env, run_app

HOSTILE = [
    pytest.param("app", "plain-password-0123456789", id="plain"),
    pytest.param("o'wn\"er $x$\n%s \\gexec;", "p'w\"d\n\\$1 %L;--" + "x" * 300, id="hostile"),
]


def _psql(pg, script: str, variables: dict, *, options: str = "-XAtq -1") -> str:
    """A script the way the deploy sends it, as the test cluster's superuser over TCP."""
    env = {**os.environ, "PGHOST": "127.0.0.1", "PGPORT": str(pg.port), "PGUSER": pg.user,
           "PGPASSWORD": pg.password}  # fmt: skip
    out = subprocess.run(["sh", "-c", psql_stdin(script, variables, options=options)], env=env,
                         capture_output=True, text=True)  # fmt: skip
    assert out.returncode == 0, out.stderr
    return out.stdout


def _roles(pg, owner: str) -> dict:
    """The fact, by its own command (runuser, psql, the here-document) and parser."""
    env = {**os.environ, "PGHOST": "127.0.0.1", "PGPORT": str(pg.port), "PGUSER": pg.user,
           "PGPASSWORD": pg.password}  # fmt: skip
    fact = PostgresAppRoles()
    out = subprocess.run(["sh", "-c", fact.command(owner)], env=env, capture_output=True,
                         text=True, check=True)  # fmt: skip
    return fact.process(out.stdout.splitlines())


def _login(pg, user: str, password: str, database: str, *statements: str):
    """A new connection as `user`; each statement's first value (None if refused)."""

    async def run():
        conn = await asyncpg.connect(host="127.0.0.1", port=pg.port, user=user,
                                     password=password, database=database, timeout=5)  # fmt: skip
        try:
            return [await conn.fetchval(s) for s in statements]
        finally:
            await conn.close()

    return asyncio.run(run())


def _refused(pg, user: str, password: str, database: str) -> bool:
    try:
        _login(pg, user, password, database, "SELECT 1")
    except asyncpg.InvalidAuthorizationSpecificationError:
        return True  # no LOGIN
    except asyncpg.InvalidPasswordError:
        return True
    return False


class Cluster:
    """One run of the db host's role steps at a time, as deploy.py orders them."""

    def __init__(self, pg, data, environ, owner: str):
        self.pg, self.owner = pg, owner
        self.database = "rot_" + uuid.uuid4().hex[:8]
        self.base = replace(settings_for(data, {"web", "db"}, environ=environ), postgres_user=owner)

    def create_owner(self, login_password: str | None = None) -> None:
        """The owner and its database: postgres.role and postgres.database of the deploy, or
        (with a password) a host from before the login roles, where the owner logged in."""
        if login_password is None:
            _psql(self.pg, "SELECT format('CREATE ROLE %I', :'owner') \\gexec\n",
                  {"owner": self.owner})  # fmt: skip
        else:
            _psql(self.pg, "SELECT format('CREATE ROLE %I LOGIN PASSWORD %L', :'owner', "
                  ":'verifier') \\gexec\n",
                  {"owner": self.owner, "verifier": scram_verifier(login_password)})  # fmt: skip
        _psql(self.pg, "SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'owner') \\gexec\n",
              {"db": self.database, "owner": self.owner}, options="-XAtq")  # fmt: skip

    def deploy(self, password: str):
        """The db host's `database` step: returns the settings with the login decided, and
        whether a script ran."""
        cfg = replace(self.base, secrets={**self.base.secrets, "POSTGRES_PASSWORD": password})
        roles = _roles(self.pg, self.owner)
        cfg = replace(cfg, postgres_login=app_login(roles, cfg.postgres_login_roles, password))
        script = login_script(cfg, roles)
        if script:
            _psql(self.pg, *script)
        return cfg, script is not None

    def finish(self, cfg) -> list[str]:
        """`database_finish` once every web host confirmed (the gate itself: test_rotation)."""
        old = old_logins(cfg, _roles(self.pg, self.owner))
        if old:
            _psql(self.pg, *retire_script(old))
        return old

    def drop(self) -> None:
        _psql(self.pg, "SELECT format('DROP DATABASE %I WITH (FORCE)', :'db') \\gexec\n",
              {"db": self.database}, options="-XAtq")  # fmt: skip
        names = [self.owner + "_a", self.owner + "_b", self.owner]
        _psql(self.pg, "SELECT format('DROP ROLE IF EXISTS %I', r) "
              "FROM unnest(ARRAY[:'r0', :'r1', :'r2']) r \\gexec\n",
              {f"r{i}": n for i, n in enumerate(names)})  # fmt: skip


@pytest.fixture
def cluster(pg, data, environ, request):
    made = []

    def make(owner: str) -> Cluster:
        made.append(Cluster(pg, data, environ, owner + "_" + uuid.uuid4().hex[:6]))
        return made[-1]

    yield make
    for c in made:
        c.drop()


def _owner_of(pg, c: Cluster, login: str, password: str, table: str) -> str:
    (owner,) = _login(pg, login, password, c.database,
                      f"SELECT tableowner FROM pg_tables WHERE tablename = '{table}'")  # fmt: skip
    return owner


@pytest.mark.parametrize(("owner", "password"), HOSTILE)
def test_a_rotation_keeps_the_old_login_until_the_gate_then_refuses_it(pg, cluster, owner,
                                                                      password):  # fmt: skip
    c = cluster(owner)
    a, b = c.owner + "_a", c.owner + "_b"
    c.create_owner()
    first, ran = c.deploy(password)
    assert ran and first.postgres_login == a
    assert _refused(pg, c.owner, password, c.database)  # the owner never logs in
    # What the login role creates is the owner's (its default role), as migrate's tables.
    assert _login(pg, a, password, c.database, "SELECT current_user", "SELECT session_user",
                  "CREATE TABLE t (x int)", "INSERT INTO t VALUES (1)") == [
        c.owner, a, None, None]  # fmt: skip
    assert _owner_of(pg, c, a, password, "t") == c.owner
    assert c.deploy(password)[1] is False  # converged: nothing sent
    assert c.finish(first) == []

    new = password[::-1] + "-rotated"
    second, ran = c.deploy(new)
    assert ran and second.postgres_login == b
    # Mid-rotation: both work, each with its own password only.
    assert _login(pg, a, password, c.database, "SELECT count(*) FROM t") == [1]
    assert _login(pg, b, new, c.database, "INSERT INTO t VALUES (2)", "SELECT count(*) FROM t") == [
        None, 2]  # fmt: skip
    assert _refused(pg, a, new, c.database) and _refused(pg, b, password, c.database)
    # Rotating again before the old login is retired: refused, naming the situation.
    with pytest.raises(SettingsError, match="previous password rotation is unfinished") as error:
        c.deploy(new + "-again")
    assert "no --limit" in str(error.value) and a in str(error.value)
    assert new not in str(error.value) and password not in str(error.value)

    assert c.finish(second) == [a]
    assert _refused(pg, a, password, c.database)
    assert _roles(pg, c.owner)[a] == {"login": False, "verifier": None, "member": True,
                                      "default_role": True}  # fmt: skip
    assert _login(pg, b, new, c.database, "SELECT count(*) FROM t") == [2]
    assert c.deploy(new)[1] is False and c.finish(second) == []
    # The next rotation goes back to the first login role.
    third, ran = c.deploy(password + "-third")
    assert ran and third.postgres_login == a


def test_a_host_from_before_the_login_roles_keeps_the_owner_login_until_the_gate(pg, cluster):
    c = cluster("app")
    password = "owner-login-password-0123456789"
    c.create_owner(login_password=password)
    # Its replicas logged in as the owner and created the tables.
    _login(pg, c.owner, password, c.database, "CREATE TABLE t (x int)", "INSERT INTO t VALUES (1)")
    cfg, ran = c.deploy(password)
    assert ran and cfg.postgres_login == c.owner + "_a"
    # Replicas not yet switched still connect as the owner; switched ones as its login role.
    assert _login(pg, c.owner, password, c.database, "SELECT count(*) FROM t") == [1]
    assert _login(pg, cfg.postgres_login, password, c.database, "INSERT INTO t VALUES (2)",
                  "SELECT count(*) FROM t") == [None, 2]  # fmt: skip
    assert c.finish(cfg) == [c.owner]
    assert _refused(pg, c.owner, password, c.database)
    assert _roles(pg, c.owner)[c.owner]["verifier"] is None
    assert _login(pg, cfg.postgres_login, password, c.database, "SELECT count(*) FROM t") == [2]


def test_the_real_migrate_and_migrate_stop_work_as_a_login_role(pg, cluster, redis_server):
    c = cluster("app")
    password = "app-login-password-0123456789"
    c.create_owner()
    cfg, _ = c.deploy(password)
    url = f"postgresql://{cfg.postgres_login}:{password}@127.0.0.1:{pg.port}/{c.database}"
    env = app_env(url, redis_server.url)
    result = run_app("migrate", env)
    assert result.returncode == 0, result.stderr
    owners = _login(pg, cfg.postgres_login, password, c.database,
                    "SELECT string_agg(DISTINCT tableowner, ',') FROM pg_tables "
                    "WHERE schemaname = 'public'")  # fmt: skip
    assert owners == [c.owner]

    async def stuck_migrate():
        # A migrate session the deploy gave up on (app/migrate.py names its sessions).
        return await asyncpg.connect(url, server_settings={"application_name": "prodstack-migrate"})

    loop = asyncio.new_event_loop()
    try:
        held = loop.run_until_complete(stuck_migrate())
        stop = run_app("migrate-stop", env)
        assert stop.returncode == 0, stop.stderr
        assert "terminated 1 migrate session(s)" in stop.stderr
        loop.run_until_complete(held.close(timeout=2))
    finally:
        loop.close()


# --- The choice, and what the next run sends ----------------------------------------------

LOGINS = ("app_a", "app_b")


def _role(password: str | None, login: bool = True) -> dict:
    return {"login": login, "verifier": scram_verifier(password) if password else None,
            "member": True, "default_role": True}  # fmt: skip


@pytest.mark.parametrize(
    ("roles", "chosen"),
    [
        ({}, "app_a"),  # a fresh host
        ({"app": _role("P0")}, "app_a"),  # the owner logged in: its login roles are new
        ({"app_a": _role("P0"), "app_b": _role(None, login=False)}, "app_b"),
        ({"app_a": _role(None, login=False), "app_b": _role("P0")}, "app_a"),
        ({"app_a": _role("P1"), "app_b": _role("P0")}, "app_a"),  # a run again: same role
        ({"app_a": _role("P0", login=False), "app_b": _role("P1")}, "app_b"),
        ({"app_a": _role("P0", login=False), "app_b": _role("P2")}, "app_a"),  # no login
    ],
)
def test_the_password_goes_to_the_role_that_has_it_else_to_one_no_one_uses(roles, chosen):
    assert app_login(roles, LOGINS, "P1") == chosen


def test_both_logins_on_other_passwords_is_refused_before_any_change():
    with pytest.raises(SettingsError, match="previous password rotation is unfinished"):
        app_login({"app_a": _role("P0"), "app_b": _role("P1")}, LOGINS, "P2")


ROUND_TRIP = [
    "plain",
    "o'wn\"er $x$ \\gexec; \\\\ \\' ''",
    "two\nlines\r\nPRODSTACK_SQL\n\\q",
    "\\set x 1\n\\! touch /tmp/prodstack-psql-pwned",
    "x" * 5000,
]


@pytest.mark.parametrize("value", ROUND_TRIP)
def test_a_psql_variable_arrives_exactly_and_never_on_the_command_line(pg, value):
    """A verifier sent this way is not in psql's argv (every user of the host reads it in
    /proc), and reaches the server byte for byte: quotes, backslashes, a meta-command, a
    line that would end the here-document, a very long value."""
    command = psql_stdin("SELECT :'v';\n", {"v": value})
    assert value not in command.split("\n", 1)[0]
    sent = _psql(pg, "SELECT md5(:'v');\n", {"v": value}, options="-XAtq").strip()
    assert sent == hashlib.md5(value.encode()).hexdigest()
    assert not os.path.exists("/tmp/prodstack-psql-pwned")
