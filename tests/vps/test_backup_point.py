"""The nightly backup point (prodstack/host/backup.py) against a real PostgreSQL:
the tables are locked and counted as the app's owner role, with every name built on the
server, so a table the app names to close a string literal runs nothing.

The script runs psql as the `postgres` OS user over a Unix socket, as on a host: this
module's server lets `postgres` in by peer authentication on its own socket only.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from pathlib import Path

import pytest

from prodstack.host import backup as backup_module
from prodstack.local_services import PostgresServer

OWNER = "app_owner"
DATABASE = "pointdb"


def marker_name(marker: Path) -> str:
    """The review's payload: it closes the old code's string literal and runs a program."""
    return f"a',1));COPY(SELECT 1)TO PROGRAM'touch {marker}';--"


def hostile_names(marker: Path) -> list[str]:
    names = [
        marker_name(marker),
        "it's",
        "semi;colon",
        "new\nline",
        "'\";" * 21,  # 63 bytes: PostgreSQL's longest name
        'double"quote',
        "back\\slash",
        ":owner",  # psql variable syntax, in case a name ever reached the script text
    ]
    assert all(len(n.encode()) <= 63 for n in names)
    return names


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


class Server(PostgresServer):
    """PostgresServer with peer authentication on its socket, and a `postgres` superuser
    (the role the host's scripts connect as)."""

    def __init__(self) -> None:
        super().__init__()
        self.psql("CREATE ROLE postgres SUPERUSER LOGIN", database="postgres")
        (self.data / "pg_hba.conf").write_text(
            "local all all peer\nhost all all 127.0.0.1/32 scram-sha-256\n"
        )
        self.stop()
        self.start()


@pytest.fixture(scope="module")
def server():
    s = Server()
    s.psql(f"CREATE ROLE {OWNER} LOGIN", database="postgres")
    s.psql(f"CREATE DATABASE {DATABASE} OWNER {OWNER}", database="postgres")
    yield s
    s.close()


@pytest.fixture
def script():
    return backup_module


def as_owner(server: Server, sql: str) -> str:
    """SQL run by the app's owner role (as its migrations would)."""
    return server.psql(f"SET ROLE {OWNER}; {sql}", database=DATABASE)


@pytest.fixture
def cfg(server):
    as_owner(server, "DROP SCHEMA IF EXISTS public CASCADE; CREATE SCHEMA public")
    for schema in server.psql(
        "select quote_ident(nspname) from pg_namespace where nspname like 'w%'",
        database=DATABASE,
    ).split("\n"):
        if schema:
            server.psql(f"DROP SCHEMA {schema} CASCADE", database=DATABASE)
    return {
        "port": server.port,
        "database": DATABASE,
        "socket_directory": str(server.root),
        "owner_role": OWNER,
        "point_lock_timeout": "2s",
        "point_statement_timeout": "30s",
    }


@pytest.fixture
def marker():
    path = Path(f"/tmp/pm-{uuid.uuid4().hex[:8]}")
    yield path
    path.unlink(missing_ok=True)


def test_hostile_table_names_are_counted_and_run_nothing(server, script, cfg, marker):
    names = hostile_names(marker)
    for n, name in enumerate(names):
        table = quote(name)
        as_owner(server, f"CREATE TABLE {table} (id int); "
                         f"INSERT INTO {table} SELECT generate_series(1, {n + 1})")  # fmt: skip
    weird = quote("w'eird;schema")
    as_owner(server, f"CREATE SCHEMA {weird}; CREATE TABLE {weird}.\"t'\" (id int); "
                     f"INSERT INTO {weird}.\"t'\" VALUES (1), (2)")  # fmt: skip
    as_owner(server, "CREATE TABLE public.schema_migrations (version text PRIMARY KEY); "
                     "INSERT INTO schema_migrations VALUES ('1_a'), ('2_b&<c>')")  # fmt: skip

    point = script.take_point(cfg, "prodstack-test-point")

    assert not marker.exists(), "a table name ran a program"
    expected = {
        server.psql(f"select format('%I.%I', 'public', {literal(name)}::text)", database=DATABASE):
        n + 1 for n, name in enumerate(names)
    }  # fmt: skip
    expected['"w\'eird;schema"."t\'"'] = 2
    expected["public.schema_migrations"] = 2
    assert point["counts"] == expected
    # The migration is the text as stored, not XML-escaped on its way through query_to_xml.
    assert point["migration"] == "2_b&<c>"
    assert point["freeze_ms"]["held"] >= 0 and point["freeze_ms"]["lock_wait"] >= 0
    # The drill's check (on the restored cluster) is the same query: it agrees here.
    again = script.counts(cfg)
    assert again == {"counts": point["counts"], "migration": point["migration"]}


def test_an_empty_database_has_a_point_with_no_tables(server, script, cfg):
    point = script.take_point(cfg, "prodstack-test-empty")
    assert (point["counts"], point["migration"]) == ({}, None)


def test_counts_run_as_the_owner_role_not_as_superuser(server, script, cfg):
    as_owner(server, "CREATE TABLE mine (id int); INSERT INTO mine VALUES (1)")
    # A table only a superuser can read: the owner role neither locks nor counts it.
    server.psql("CREATE TABLE public.superusers_only (id int)", database=DATABASE)
    server.psql("INSERT INTO public.superusers_only VALUES (1)", database=DATABASE)
    # A row-level security policy is code the app wrote; with FORCE it would run for the
    # owner. A policy that tries to leave the owner role makes the point fail; it never runs.
    as_owner(
        server,
        """
        CREATE FUNCTION public.escape() RETURNS boolean LANGUAGE plpgsql AS $$
        BEGIN RESET ROLE; RETURN true; END $$;
        CREATE TABLE guarded (id int);
        ALTER TABLE guarded ENABLE ROW LEVEL SECURITY;
        ALTER TABLE guarded FORCE ROW LEVEL SECURITY;
        CREATE POLICY p ON guarded USING (public.escape());
    """,
    )
    with pytest.raises(SystemExit, match="row-level security"):
        script.take_point(cfg, "prodstack-test-rls")
    as_owner(server, "DROP TABLE guarded")
    point = script.take_point(cfg, "prodstack-test-owner")
    assert point["counts"] == {"public.mine": 1}


def test_a_function_the_app_defines_does_not_replace_a_catalog_one(server, script, cfg, marker):
    # An exact-type match in public would beat pg_catalog's variadic format() under a
    # default search_path (CVE-2018-1058's pattern); the point pins pg_catalog.
    as_owner(
        server,
        f"""
        CREATE TABLE t (id int);
        CREATE FUNCTION public.count(int) RETURNS bigint LANGUAGE sql AS
          $$ COPY (SELECT 1) TO PROGRAM 'touch {marker}'; SELECT 0::bigint $$;
        CREATE FUNCTION public.format(text, name, name) RETURNS text LANGUAGE sql AS
          $$ SELECT 'x' $$;
    """,
    )
    point = script.take_point(cfg, "prodstack-test-shadow")
    assert point["counts"] == {"public.t": 0}
    assert not marker.exists()


def test_a_writer_holding_its_lock_fails_the_point_within_the_lock_timeout(server, script, cfg):
    as_owner(server, "CREATE TABLE busy (id int)")
    # A transaction that has written and stays open holds ROW EXCLUSIVE on the table.
    holder = subprocess.Popen(
        ["runuser", "-u", "postgres", "--", "psql", "-XAtq", "-h", str(server.root), "-p",
         str(server.port), "-d", DATABASE],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    holder.stdin.write("begin; insert into busy values (1); select 'held';\n")
    holder.stdin.flush()
    assert holder.stdout.readline().strip() == "held"
    try:
        started = time.monotonic()
        with pytest.raises(SystemExit, match="lock timeout"):
            script.take_point({**cfg, "point_lock_timeout": "300ms"}, "prodstack-test-busy",
                              attempts=1)  # fmt: skip
        assert time.monotonic() - started < 5
    finally:
        holder.stdin.write("rollback;\n")
        holder.stdin.close()
        holder.wait(timeout=10)
