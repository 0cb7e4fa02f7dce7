"""Which root the app trusts on each database path, against a real PostgreSQL over TLS.

The cloud stack gives the API behind RDS Proxy ``DB_SSLMODE=verify-full`` and
``DB_SSLROOTCERT`` = the image's system bundle (stacks/program.py ``PROXY_CA_BUNDLE``):
the proxy's ACM certificate chains to the Amazon Trust Services roots there, not to the
RDS CA. The server here carries a certificate from a private CA, standing in for any CA
outside the bundle (the RDS CA is one): the app's URL built with the bundle refuses it,
the same URL with that CA as root accepts it, and libpq's ``sslrootcert=system`` is no
option for asyncpg (it reads a file of that name).
"""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import ssl

import asyncpg
import pytest

from app.core.config import load_settings
from stacks.program import PROXY_CA_BUNDLE
from tests.support.services import PostgresServer
from tests.support.tls import make_test_ca

# The roots an ACM certificate chains to ("we recommend that all five of the above roots
# be included in the trust store"). Source: amazontrust.com/repository (Root CAs, trust
# store recommendations); ACM's public certificates come from Amazon Trust Services (AWS
# security blog, "How to configure and verify ACM certificates with trust stores").
AMAZON_TRUST_SERVICES_ROOTS = (
    "Amazon Root CA 1", "Amazon Root CA 2", "Amazon Root CA 3", "Amazon Root CA 4",
    "Starfield Services Root Certificate Authority - G2",
)


@pytest.fixture(scope="module")
def tls_pg(tmp_path_factory: pytest.TempPathFactory):
    """A PostgreSQL that speaks TLS with a certificate for 127.0.0.1 from a private CA."""
    pki = tmp_path_factory.mktemp("pg-tls")
    ca, cert, key = make_test_ca(pki, "localhost", "127.0.0.1")
    server = PostgresServer()
    try:
        server.stop()
        owner = pwd.getpwnam("postgres")
        for src, name, mode in ((cert, "server.crt", 0o644), (key, "server.key", 0o600)):
            shutil.copy(src, server.root / name)
            os.chmod(server.root / name, mode)
            os.chown(server.root / name, owner.pw_uid, owner.pw_gid)
        with open(server.data / "postgresql.conf", "a") as conf:
            conf.write(f"ssl = on\nssl_cert_file = '{server.root / 'server.crt'}'\n"
                       f"ssl_key_file = '{server.root / 'server.key'}'\n")
        server.start()
        yield server, ca
    finally:
        server.close()


def _database_url(server: PostgresServer, rootcert: str) -> str:
    """The URL the app builds from the variables ECS gives it (password login here; the
    TLS part is the same with DB_IAM)."""
    settings = load_settings({
        "DB_HOST": "127.0.0.1", "DB_PORT": str(server.port), "DB_NAME": server.database,
        "DB_USER": server.user, "DB_PASSWORD": server.password,
        "DB_SSLMODE": "verify-full", "DB_SSLROOTCERT": rootcert,
        "REDIS_URL": "redis://127.0.0.1:1/0", "API_TOKEN": "t" * 32,
    })
    assert settings.database_url.endswith(f"?sslmode=verify-full&sslrootcert={rootcert}")
    return settings.database_url


async def _ssl_in_use(url: str) -> bool:
    conn = await asyncpg.connect(url, timeout=5)
    try:
        return await conn.fetchval("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
    finally:
        await conn.close()


def test_proxy_path_trusts_the_system_roots_only(tls_pg) -> None:
    """A server certificate from a CA outside the system bundle is refused on the proxy
    path: the app verifies against the bundle it was given, nothing looser."""
    server, _ca = tls_pg
    with pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer"):
        asyncio.run(_ssl_in_use(_database_url(server, PROXY_CA_BUNDLE)))


def test_the_root_named_is_the_root_used(tls_pg) -> None:
    """The same URL with the server's own CA as root connects, over TLS: so the refusal
    above is the root, not the server (the direct path names the RDS CA bundle)."""
    server, ca = tls_pg
    assert asyncio.run(_ssl_in_use(_database_url(server, str(ca)))) is True


def test_libpq_system_keyword_is_not_a_root_for_asyncpg(tls_pg) -> None:
    server, _ca = tls_pg
    url = _database_url(server, PROXY_CA_BUNDLE).replace(PROXY_CA_BUNDLE, "system")
    with pytest.raises((FileNotFoundError, asyncpg.ClientConfigurationError)):
        asyncio.run(_ssl_in_use(url))


def test_system_bundle_holds_the_roots_of_the_proxys_acm_certificate() -> None:
    """Debian 12's ca-certificates, as in the image's bookworm base."""
    context = ssl.create_default_context(cafile=PROXY_CA_BUNDLE)
    names = {value for cert in context.get_ca_certs() for rdn in cert["subject"]
             for key, value in rdn if key == "commonName"}  # fmt: skip
    assert set(AMAZON_TRUST_SERVICES_ROOTS) <= names
