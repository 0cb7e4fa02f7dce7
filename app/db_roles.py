"""The API's own database role: created by `migrate`, which runs as the owner of the
schema (on RDS the master user, a member of rds_superuser), never by the API itself.

The role may log in and read and write the application's tables, nothing more: no
superuser, no CREATEROLE, no CREATEDB, no replication, no RLS bypass, no DDL (PostgreSQL
15+ gives PUBLIC no CREATE on schema public), no access to schema_migrations. Each run
re-asserts those attributes, so a role widened by hand is brought back in line.

On RDS the role signs in with IAM tokens: membership of ``rds_iam`` makes RDS check
the token instead of a password (RDS user guide, UsingWithRDS.IAMDBAuth.DBAccounts.PostgreSQL).
"""

from __future__ import annotations

import logging

import asyncpg

from app.core.config import ROLE_NAME_RE, AppRole

log = logging.getLogger("app.migrate")
# Attributes the role is created with; every privilege not named is off.
CREATE_ATTRIBUTES = "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS"
# What a CREATEROLE owner (not a superuser, like RDS's master user) may change on an
# existing role; PostgreSQL 16 lets only superusers name SUPERUSER, REPLICATION or
# BYPASSRLS in ALTER ROLE, so those are checked instead.
ALTER_ATTRIBUTES = "LOGIN NOCREATEDB NOCREATEROLE"
RDS_IAM_ROLE = "rds_iam"


class RoleSetupError(Exception):
    """The app role cannot be set up as asked (names what is missing)."""


async def ensure_app_role(conn: asyncpg.Connection, role: AppRole) -> None:
    """Create or correct ``role`` and grant it exactly the app's table privileges."""
    # The name was validated (ROLE_NAME_RE): safe to interpolate, needs no quoting.
    if not ROLE_NAME_RE.fullmatch(role.name):
        raise RoleSetupError(f"invalid role name {role.name!r}")
    name = role.name
    database = await conn.fetchval("SELECT quote_ident(current_database())")
    async with conn.transaction():
        exists = await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", name)
        if exists:
            await conn.execute(f"ALTER ROLE {name} {ALTER_ATTRIBUTES}")
        else:
            await conn.execute(f"CREATE ROLE {name} {CREATE_ATTRIBUTES}")
            log.info("created database role %s", name)
        wide = await conn.fetchrow(
            "SELECT rolsuper, rolreplication, rolbypassrls FROM pg_roles WHERE rolname = $1",
            name,
        )
        if any(wide.values()):
            raise RoleSetupError(
                f"role {name} has superuser, replication or bypassrls; a superuser must "
                f"remove them (ALTER ROLE {name} NOSUPERUSER NOREPLICATION NOBYPASSRLS)"
            )
        await conn.execute(f"GRANT CONNECT ON DATABASE {database} TO {name}")
        await conn.execute(f"GRANT USAGE ON SCHEMA public TO {name}")
        await conn.execute(
            f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {name}"
        )
        await conn.execute(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {name}")
        # Tables later migrations create (as this same owner) come with the same grants.
        await conn.execute(
            "ALTER DEFAULT PRIVILEGES IN SCHEMA public "
            f"GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {name}"
        )
        await conn.execute(f"REVOKE ALL ON schema_migrations FROM {name}")
        if role.iam:
            if not await conn.fetchval(
                "SELECT 1 FROM pg_roles WHERE rolname = $1", RDS_IAM_ROLE
            ):
                raise RoleSetupError(
                    f"DB_APP_IAM: no {RDS_IAM_ROLE} role here (IAM authentication exists "
                    "only on RDS); unset DB_APP_IAM"
                )
            await conn.execute(f"GRANT {RDS_IAM_ROLE} TO {name}")
