"""The API signs in as its own database role, which reads and writes the data but cannot
change the schema or create roles or databases; checked against a real PostgreSQL.

The migrate step runs as an emulated RDS master user: not a superuser, only CREATEROLE
and CREATEDB, owner of the database, and holding ``rds_iam`` with ADMIN OPTION, which
is what RDS gives its master user. IAM token checks exist only on RDS, so the test signs
the app role in with a password set by the cluster's superuser instead.
"""

from __future__ import annotations

import asyncio
import re

import asyncpg
import pytest

from app.core.config import ConfigError, IamAuth, load_settings
from app.db import Database
from app.db_iam import IamTokenPassword
from tests.support.app_server import app_env, run_app

MASTER, MASTER_PW = "rds_master_t", "master-password-t"
APP, APP_PW = "app_role_t", "app-password-t"
DB = "db_roles_t"


def _url(pg, user: str, password: str) -> str:
    return f"postgresql://{user}:{password}@127.0.0.1:{pg.port}/{DB}"


@pytest.fixture(scope="module")
def rds_like(pg, redis_server):
    """A database owned by a non-superuser master, migrated with DB_APP_USER set."""
    pg.psql("DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'rds_iam') "
            "THEN CREATE ROLE rds_iam NOLOGIN; END IF; END $$", database="postgres")
    pg.psql(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)", database="postgres")
    pg.psql(f"DROP ROLE IF EXISTS {APP}", database="postgres")
    pg.psql(f"DROP ROLE IF EXISTS {MASTER}", database="postgres")
    pg.psql(f"CREATE ROLE {MASTER} LOGIN PASSWORD '{MASTER_PW}' CREATEROLE CREATEDB",
            database="postgres")
    pg.psql(f"GRANT rds_iam TO {MASTER} WITH ADMIN OPTION", database="postgres")
    pg.psql(f"CREATE DATABASE {DB} OWNER {MASTER}", database="postgres")
    env = app_env(_url(pg, MASTER, MASTER_PW), redis_server.url,
                  DB_APP_USER=APP, DB_APP_IAM="true")  # fmt: skip
    result = run_app("migrate", env)
    assert result.returncode == 0, result.stderr
    # Stands in for RDS's token check, which only RDS performs.
    pg.psql(f"ALTER ROLE {APP} PASSWORD '{APP_PW}'", database="postgres")
    return env


def _as_app(pg, *statements: str):
    async def run():
        conn = await asyncpg.connect(_url(pg, APP, APP_PW))
        try:
            return [await conn.fetch(s) for s in statements]
        finally:
            await conn.close()

    return asyncio.run(run())


def test_migrate_creates_a_login_role_without_admin_rights(pg, rds_like):
    row = pg.psql(f"SELECT rolcanlogin, rolsuper, rolcreaterole, rolcreatedb, rolreplication,"
                  f" rolbypassrls FROM pg_roles WHERE rolname = '{APP}'", database=DB)
    assert row == "t|f|f|f|f|f"
    assert pg.psql(f"SELECT pg_has_role('{APP}', 'rds_iam', 'member')", database=DB) == "t"


def test_app_role_reads_and_writes_the_alerts(pg, rds_like):
    inserted, found = _as_app(
        pg,
        "INSERT INTO alerts (id, message, type, priority, region) VALUES "
        "(gen_random_uuid(), 'm', 'flood', 'high', 'eu') RETURNING id",
        "SELECT count(*) AS n FROM alerts",
    )
    assert len(inserted) == 1 and found[0]["n"] >= 1


@pytest.mark.parametrize("statement", [
    "CREATE ROLE intruder_t LOGIN",
    "CREATE DATABASE intruder_t",
    "CREATE TABLE intruder_t (id int)",
    "DROP TABLE alerts",
    "SELECT * FROM schema_migrations",
    "ALTER TABLE alerts ADD COLUMN intruder int",
])
def test_app_role_cannot_create_roles_databases_or_change_the_schema(
    pg, rds_like, statement
):
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        _as_app(pg, statement)


def test_migrate_brings_a_widened_role_back_in_line(pg, rds_like):
    pg.psql(f"ALTER ROLE {APP} CREATEDB CREATEROLE", database="postgres")
    result = run_app("migrate", rds_like)
    assert result.returncode == 0, result.stderr
    row = pg.psql(f"SELECT rolcreaterole, rolcreatedb FROM pg_roles WHERE rolname = '{APP}'",
                  database=DB)
    assert row == "f|f"


def test_the_pool_asks_for_a_fresh_password_for_every_new_connection(pg, rds_like):
    calls = []

    async def token() -> str:
        calls.append(1)
        return APP_PW

    async def run():
        db = Database(f"postgresql://{APP}@127.0.0.1:{pg.port}/{DB}", max_size=2,
                      password=token)  # fmt: skip
        await db.open()
        try:
            async with db.pool.acquire(), db.pool.acquire():
                pass  # two connections open at once: two tokens
            await db.ping(2.0)  # reuses a pooled connection: no new token
        finally:
            await db.close()

    asyncio.run(run())
    assert len(calls) == 2


def test_iam_token_is_a_signed_connect_request_for_the_user():
    import botocore.session

    session = botocore.session.get_session()
    session.set_credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
    client = session.create_client("rds", region_name="eu-west-1")
    auth = IamAuth(host="db.example.internal", port=5432, user="prodstack_app",
                   region="eu-west-1")  # fmt: skip
    provider = IamTokenPassword(auth, client=client)
    token = asyncio.run(provider())
    assert token.startswith("db.example.internal:5432/?Action=connect&DBUser=prodstack_app&")
    assert "X-Amz-Expires=900" in token
    assert re.search(r"X-Amz-Credential=AKIDEXAMPLE%2F\d{8}%2Feu-west-1%2Frds-db%2F", token)
    assert re.search(r"X-Amz-Signature=[0-9a-f]{64}", token)
    assert asyncio.run(provider()) != "" and provider.token().startswith("db.example")


IAM_ENV = {"DB_IAM": "true", "DB_HOST": "db.internal", "DB_USER": "prodstack_app",
           "AWS_REGION": "eu-west-1", "DB_SSLMODE": "verify-full",
           "DB_SSLROOTCERT": "/etc/ssl/rds/global-bundle.pem",
           "REDIS_URL": "redis://127.0.0.1:6379/0", "API_TOKEN": "x" * 32}  # fmt: skip


def test_iam_settings_build_a_url_without_password():
    settings = load_settings(IAM_ENV)
    assert settings.database_url == (
        "postgresql://prodstack_app@db.internal:5432/app?sslmode=verify-full"
        "&sslrootcert=/etc/ssl/rds/global-bundle.pem"
    )
    assert settings.db_iam == IamAuth("db.internal", 5432, "prodstack_app", "eu-west-1")


@pytest.mark.parametrize("change, named", [
    ({"DB_PASSWORD": "leftover"}, "DB_PASSWORD must be empty with DB_IAM"),
    ({"AWS_REGION": ""}, "AWS_REGION is required with DB_IAM"),
    ({"DB_SSLMODE": "disable"}, "DB_SSLMODE must be one of require"),
    ({"DB_USER": ""}, "DB_HOST and DB_USER are required with DB_IAM"),
    ({"DB_APP_IAM": "true"}, "DB_APP_IAM needs DB_APP_USER"),
    ({"DB_APP_USER": "Bad-Name"}, "DB_APP_USER must be lowercase"),
])
def test_iam_settings_refuse_what_cannot_work(change, named):
    with pytest.raises(ConfigError, match=re.escape(named)):
        load_settings({**IAM_ENV, **change})
