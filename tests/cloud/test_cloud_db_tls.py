"""The API and migrate tasks verify RDS's certificate (``sslmode=verify-full`` with the
RDS CA bundle shipped in the image).

The bundle checks run on the committed file and on bundles broken on purpose; the
connection checks run the app's own settings, built from the environment the real
program gives the migrate container, against a real PostgreSQL speaking TLS.
"""

from __future__ import annotations

import asyncio
import datetime
import ssl
import sys
from pathlib import Path

import asyncpg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from prodstack_cloud_harness import REPO, Manifest

# The VPS profile's private CA makes the server certificate no RDS CA signed.
if str(REPO / "pyinfra") not in sys.path:
    sys.path.append(str(REPO / "pyinfra"))
from tasks.pki import ca_certificate, server_certificate  # noqa: E402

from app.core.config import load_settings
from components.database import CA_CERT_IDENTIFIER
from prodstack.local_services import PostgresServer, tls_files
from stacks import rds_ca
from stacks.config import REGIONS
from stacks.program import PROXY_CA_BUNDLE, PROXY_CA_ROOTS

NOW = datetime.datetime(2026, 12, 1, tzinfo=datetime.UTC)


def _certs() -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(rds_ca.BUNDLE.read_bytes())


def _pem(certs: list[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def _name(cert: x509.Certificate) -> str:
    return cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value


# --- The bundle ---------------------------------------------------------------------


def test_shipped_bundle_holds_only_rds_cas_with_a_root_for_every_region() -> None:
    assert rds_ca.problems(rds_ca.BUNDLE.read_bytes(), REGIONS, CA_CERT_IDENTIFIER) == []
    # The instance's CA is one the check knows, and the one the policy pins.
    assert CA_CERT_IDENTIFIER in rds_ca.ROOT_SUFFIXES


def test_bundle_check_names_a_missing_region_root() -> None:
    certs = [c for c in _certs() if _name(c) != "Amazon RDS eu-west-1 Root CA RSA2048 G1"]
    assert rds_ca.problems(_pem(certs), ["eu-west-1", "us-east-1"], CA_CERT_IDENTIFIER,
                           NOW) == [f"no {CA_CERT_IDENTIFIER} root for eu-west-1"]  # fmt: skip


def test_bundle_check_refuses_a_foreign_ca(tmp_path: Path) -> None:
    foreign = ca_certificate(tmp_path / "pki").read_bytes()
    found = rds_ca.problems(rds_ca.BUNDLE.read_bytes() + foreign, ["eu-west-1"],
                            CA_CERT_IDENTIFIER, NOW)  # fmt: skip
    assert len(found) == 1 and found[0].endswith("is not an Amazon RDS CA")


def _rds_name(cn: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(x509.NameOID.ORGANIZATION_NAME, "Amazon Web Services, Inc."),
        x509.NameAttribute(x509.NameOID.ORGANIZATIONAL_UNIT_NAME, "Amazon RDS"),
        x509.NameAttribute(x509.NameOID.COMMON_NAME, cn),
    ])  # fmt: skip


def _rds_named_certificate(issuer: x509.Name) -> x509.Certificate:
    """A certificate that calls itself an RDS CA, in ``issuer``'s name but signed by a key
    of its own."""
    key = ec.generate_private_key(ec.SECP256R1())
    return (
        x509.CertificateBuilder().subject_name(_rds_name("Amazon RDS eu-west-1 CA"))
        .issuer_name(issuer).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW).not_valid_after(NOW + datetime.timedelta(days=3650))
        .sign(key, hashes.SHA256())
    )  # fmt: skip


def test_bundle_check_refuses_a_certificate_that_does_not_chain() -> None:
    orphan = _rds_named_certificate(_rds_name("Amazon RDS Unknown Root CA"))
    found = rds_ca.problems(_pem([*_certs(), orphan]), [], CA_CERT_IDENTIFIER, NOW)
    assert found == ["'Amazon RDS eu-west-1 CA' does not chain inside the bundle: "
                     "its issuer is not in the bundle"]  # fmt: skip
    # Issued in the name of a real root, but not signed by its key.
    root = next(c for c in _certs() if _name(c) == "Amazon RDS eu-west-1 Root CA RSA2048 G1")
    forged = _rds_named_certificate(root.subject)
    found = rds_ca.problems(_pem([*_certs(), forged]), [], CA_CERT_IDENTIFIER, NOW)
    assert len(found) == 1 and "does not chain inside the bundle" in found[0]


def test_bundle_check_names_expired_and_expiring_roots() -> None:
    root = next(c for c in _certs() if _name(c) == "Amazon RDS eu-west-1 Root CA RSA2048 G1")
    expires = root.not_valid_after_utc
    # Less than a year before the root expires the check names it; after, it says expired.
    found = rds_ca.problems(rds_ca.BUNDLE.read_bytes(), ["eu-west-1"], CA_CERT_IDENTIFIER,
                            expires - datetime.timedelta(days=300))  # fmt: skip
    assert found == [f"the {CA_CERT_IDENTIFIER} root for eu-west-1 expires on {expires:%Y-%m-%d}"]
    found = rds_ca.problems(rds_ca.BUNDLE.read_bytes(), ["eu-west-1"], CA_CERT_IDENTIFIER,
                            expires + datetime.timedelta(days=1))  # fmt: skip
    assert f"'{_name(root)}' expired on {expires:%Y-%m-%d}" in found
    assert rds_ca.problems(b"not a certificate", [], CA_CERT_IDENTIFIER, NOW)[0].startswith(
        "not a PEM certificate bundle"
    )
    assert rds_ca.problems(rds_ca.BUNDLE.read_bytes(), [], "rds-ca-2019", NOW) == [
        "unknown CA identifier 'rds-ca-2019'; known: " + ", ".join(rds_ca.ROOT_SUFFIXES)
    ]


def test_bundle_in_the_image_is_the_committed_file() -> None:
    """app/ is copied whole to /srv/app/app (app/Dockerfile), so the in-image path the
    stack sets is the committed file's path under app/."""
    dockerfile = (REPO / "app" / "Dockerfile").read_text()
    assert "WORKDIR /srv/app" in dockerfile and "/srv/app/app" in dockerfile
    relative = rds_ca.BUNDLE.relative_to(REPO / "app").as_posix()
    assert f"/srv/app/app/{relative}" == rds_ca.BUNDLE_IN_IMAGE
    assert ".pem" not in (REPO / "app" / ".dockerignore").read_text()


# --- What the tasks are told --------------------------------------------------------


def test_every_database_client_verifies_the_rds_certificate(both: list[Manifest]) -> None:
    for m in both:
        tasks = [i["family"] for i in m.inputs("taskDefinition:TaskDefinition")]
        clients = 0
        for family in tasks:
            for name, c in m.containers(family).items():
                env = {e["name"]: e["value"] for e in c.get("environment", [])}
                if "DB_HOST" in env:
                    clients += 1
                    assert env["DB_SSLMODE"] == "verify-full", (family, name)
                    assert env["DB_SSLROOTCERT"] == rds_ca.BUNDLE_IN_IMAGE, (family, name)
        assert clients >= 2  # the API and migrate


# --- Against a real PostgreSQL ------------------------------------------------------


@pytest.fixture(scope="module")
def tls_postgres(tmp_path_factory: pytest.TempPathFactory):
    """PostgreSQL on 127.0.0.1 with TLS only, its certificate from a CA outside the RDS
    bundle (tasks/pki.py, as the VPS profile makes them)."""
    pki = tmp_path_factory.mktemp("pki")
    cert, key = server_certificate(pki, "127.0.0.1")
    server = PostgresServer()
    server.enable_tls(tls_files(cert, key, "postgres"))
    yield server, ca_certificate(pki)
    server.close()


def _migrate_settings(prod: Manifest, server: PostgresServer, **override: str):
    """The app's settings from the environment the program gives migrate, pointed at the
    local server (its secrets, injected by ECS, become the local credentials)."""
    family = next(i["family"] for i in prod.inputs("taskDefinition:TaskDefinition")
                  if i["family"].endswith("-migrate"))  # fmt: skip
    env = {e["name"]: e["value"] for e in prod.containers(family)["migrate"]["environment"]}
    env = {k: v for k, v in env.items() if not k.startswith("DB_APP_")}
    env.update(DB_HOST="127.0.0.1", DB_PORT=str(server.port), DB_NAME=server.database,
               DB_USER=server.user, DB_PASSWORD=server.password, REDIS_URL="redis://127.0.0.1:1/0",
               API_TOKEN="t" * 32, **override)  # fmt: skip
    env["DB_SSLROOTCERT"] = env["DB_SSLROOTCERT"].replace(
        rds_ca.BUNDLE_IN_IMAGE, str(rds_ca.BUNDLE)
    )
    return load_settings(env)


async def _ssl_in_use(url: str) -> bool:
    conn = await asyncpg.connect(url, timeout=5)
    try:
        return await conn.fetchval("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
    finally:
        await conn.close()


def test_app_refuses_a_server_whose_certificate_no_rds_ca_signed(prod, tls_postgres) -> None:
    server, _ = tls_postgres
    settings = _migrate_settings(prod, server)
    assert "sslmode=verify-full" in settings.database_url
    with pytest.raises(ssl.SSLCertVerificationError):
        asyncio.run(_ssl_in_use(settings.database_url))


def test_app_connects_when_the_root_signs_the_server(prod, tls_postgres) -> None:
    """The same settings with the server's own CA as the bundle: the refusal above is the
    certificate check, not a broken URL."""
    server, ca = tls_postgres
    settings = _migrate_settings(prod, server, DB_SSLROOTCERT=str(ca))
    assert asyncio.run(_ssl_in_use(settings.database_url)) is True
    fingerprint = x509.load_pem_x509_certificate(ca.read_bytes()).fingerprint(hashes.SHA256())
    bundled = {c.fingerprint(hashes.SHA256()) for c in _certs()}
    assert fingerprint not in bundled


# --- Behind RDS Proxy (rds_proxy: true): the API trusts the system roots ---------------


def _api_settings(m: Manifest, server: PostgresServer, **override: str):
    """The app's settings from the environment the program gives the API, pointed at the
    local server with a password login instead of an IAM token (the TLS part is the
    same either way)."""
    env = {e["name"]: e["value"] for e in m.containers("prodstack-prod")["api"]["environment"]}
    env.pop("DB_IAM")
    env.update(DB_HOST="127.0.0.1", DB_PORT=str(server.port), DB_NAME=server.database,
               DB_USER=server.user, DB_PASSWORD=server.password, REDIS_URL="redis://127.0.0.1:1/0",
               API_TOKEN="t" * 32, **override)  # fmt: skip
    return load_settings(env)


def test_proxy_path_verifies_against_the_system_roots_only(prod_proxy, tls_postgres) -> None:
    """The proxy presents an ACM certificate, so the API behind it names the image's system
    bundle, not the RDS one; a server whose CA is outside that bundle is refused."""
    server, ca = tls_postgres
    settings = _api_settings(prod_proxy, server)
    assert settings.database_url.endswith(
        f"?sslmode=verify-full&sslrootcert={PROXY_CA_BUNDLE}")
    with pytest.raises(ssl.SSLCertVerificationError):
        asyncio.run(_ssl_in_use(settings.database_url))
    # The same settings with the server's own CA connect: the refusal is the root.
    trusted = _api_settings(prod_proxy, server, DB_SSLROOTCERT=str(ca))
    assert asyncio.run(_ssl_in_use(trusted.database_url)) is True


def test_libpq_system_keyword_is_no_root_for_asyncpg(prod_proxy, tls_postgres) -> None:
    """libpq 16's sslrootcert=system means the system store; asyncpg reads a file of that
    name, which is why the stack names Debian's bundle by path."""
    server, _ = tls_postgres
    settings = _api_settings(prod_proxy, server, DB_SSLROOTCERT="system")
    with pytest.raises((FileNotFoundError, asyncpg.ClientConfigurationError)):
        asyncio.run(_ssl_in_use(settings.database_url))


def test_system_bundle_holds_the_roots_of_the_proxys_acm_certificate() -> None:
    """Debian 12's ca-certificates on this machine; tests/image checks the image's."""
    context = ssl.create_default_context(cafile=PROXY_CA_BUNDLE)
    names = {value for cert in context.get_ca_certs() for rdn in cert["subject"]
             for key, value in rdn if key == "commonName"}  # fmt: skip
    assert set(PROXY_CA_ROOTS) <= names
