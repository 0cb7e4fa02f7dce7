"""Split layout: PostgreSQL and Redis between hosts speak TLS only, verified against the
deploy's private CA (tasks/pki.py), and the app's URLs insist on it.

The servers here are real (Debian's postgresql and redis-server on loopback) and run the
rendered templates' TLS settings with certificates from tasks/pki.py; the clients are the
app's own (asyncpg with the rendered DATABASE_URL, app.redis_pipeline with REDIS_URL).
"""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
from dataclasses import replace
from pathlib import Path

import asyncpg
import pytest
from cryptography import x509
from tasks.config import settings_for
from tasks.pki import CA_ON_HOST, ca_certificate, server_certificate

from app.redis_pipeline import PipelinedRedis, RedisUnavailable
from prodstack.local_services import (
    PostgresServer,
    RedisServer,
    free_port,
    tls_files,
    wait_for_port,
)
from tests.vps.test_templates import render

WEB_ADDRESS, DB_ADDRESS = "10.0.0.10", "10.0.0.20"


def split(data, environ, tmp_path, address=DB_ADDRESS, **override):
    """(web host settings, db host settings) of the two-host layout, CA in tmp_path/pki."""
    db = {
        **data, "private_address": address, "db_client_cidrs": [f"{WEB_ADDRESS}/32"],
        "pki_dir": str(tmp_path / "pki"), **override,
    }  # fmt: skip
    web = {**data, "private_address": WEB_ADDRESS, "pki_dir": str(tmp_path / "pki")}
    web_cfg = settings_for(web, {"web"}, db_data=db, environ=environ)
    return (
        replace(web_cfg, postgres_login=web_cfg.postgres_login_roles[0]),  # as deploy.py does
        settings_for(db, {"db"}, environ=environ),
    )


# --- The CA and the certificates -------------------------------------------------------


def test_ca_key_stays_private_and_certificates_are_reused(tmp_path):
    pki = tmp_path / "pki"
    cert, key = server_certificate(pki, DB_ADDRESS)
    assert oct((pki / "ca.key").stat().st_mode & 0o777) == "0o600"
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    assert oct(pki.stat().st_mode & 0o777) == "0o700"
    ca = x509.load_pem_x509_certificate(ca_certificate(pki).read_bytes())
    leaf = x509.load_pem_x509_certificate(cert.read_bytes())
    leaf.verify_directly_issued_by(ca)
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {str(a) for a in sans.get_values_for_type(x509.IPAddress)} == {DB_ADDRESS, "127.0.0.1"}
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    # A second deploy ships the same files (no change, no restart).
    before = cert.read_bytes(), key.read_bytes()
    assert server_certificate(pki, DB_ADDRESS) == (cert, key)
    assert (cert.read_bytes(), key.read_bytes()) == before


def test_certificate_reissued_for_a_new_address_or_a_new_ca(tmp_path):
    pki = tmp_path / "pki"
    first = server_certificate(pki, DB_ADDRESS)[0].read_bytes()
    other = server_certificate(pki, "10.0.0.21")[0]
    assert other.name == "db-10.0.0.21.crt"
    (pki / "ca.key").unlink()
    (pki / "ca.crt").unlink()
    again = server_certificate(pki, DB_ADDRESS)[0].read_bytes()
    assert again != first
    ca = x509.load_pem_x509_certificate((pki / "ca.crt").read_bytes())
    x509.load_pem_x509_certificate(again).verify_directly_issued_by(ca)


def test_ca_defaults_next_to_the_secrets_file(data, environ, tmp_path):
    db = {**data, "private_address": DB_ADDRESS, "db_client_cidrs": [f"{WEB_ADDRESS}/32"],
          "secrets_file": str(tmp_path / "ops" / "secrets.env")}  # fmt: skip
    assert settings_for(db, {"db"}, environ=environ).pki_dir == tmp_path / "ops" / "pki"


# --- What the templates and URLs say ---------------------------------------------------


def test_split_layout_configs_allow_tls_only(data, environ, tmp_path):
    web, db = split(data, environ, tmp_path)
    hba = [line.split() for line in render("pg_hba.j2.conf", db).splitlines()]
    rules = [line for line in hba if line and not line[0].startswith("#")]
    from_web = [r for r in rules if f"{WEB_ADDRESS}/32" in r]
    assert from_web == [["hostssl", "prodstack", "prodstack,prodstack_a,prodstack_b",
                         f"{WEB_ADDRESS}/32", "scram-sha-256"]]  # fmt: skip
    assert all(r[0] in ("local", "hostssl") or r[3] in ("127.0.0.1/32", "::1/128") for r in rules)
    conf = render("postgresql.j2.conf", db, tls_dir="/etc/postgresql/tls")
    assert "ssl = on" in conf and "ssl_min_protocol_version = 'TLSv1.2'" in conf
    redis = render("redis.j2.conf", db, tls_dir="/etc/redis").splitlines()
    assert "port 0" in redis and f"tls-port {db.redis_port}" in redis
    assert web.database_url.endswith(f"?sslmode=verify-full&sslrootcert={CA_ON_HOST}")
    assert web.redis_url.startswith("rediss://")
    assert web.redis_url.endswith(f"@{DB_ADDRESS}:6379/0?ssl_ca_certs={CA_ON_HOST}")


def test_single_host_bridge_stays_plaintext_by_name(data, environ):
    cfg = settings_for(data, {"web", "db"}, environ=environ)
    assert not cfg.db_tls
    assert replace(cfg, postgres_login="prodstack_a").database_url.endswith("?sslmode=disable")
    assert cfg.redis_url.startswith("redis://")
    assert "hostssl" not in render("pg_hba.j2.conf", cfg)
    assert "tls-port" not in render("redis.j2.conf", cfg, tls_dir="/etc/redis")


# --- Against real servers --------------------------------------------------------------


def _local(url: str, ca: Path) -> str:
    """The rendered URL with the host's CA path replaced by the local copy."""
    return url.replace(CA_ON_HOST, str(ca))


@pytest.fixture
def other_ca(tmp_path) -> Path:
    return ca_certificate(tmp_path / "other-pki")


def test_postgres_accepts_the_app_over_verified_tls_only(data, environ, tmp_path, other_ca):
    environ = {**environ, "PRODSTACK_POSTGRES_PASSWORD": PostgresServer.password}
    web, db = split(data, environ, tmp_path, address="127.0.0.1",
                    db_client_cidrs=["127.0.0.1/32"])  # fmt: skip
    cert, key = server_certificate(db.pki_dir, db.db_address)
    server = PostgresServer()
    tls = tls_files(cert, key, "postgres")
    try:
        # The replicas' login role (tasks/postgres.py makes it; here by hand).
        server.psql(f"CREATE ROLE {web.postgres_login} LOGIN PASSWORD '{server.password}'")
        server.stop()
        conf = render("postgresql.j2.conf", db, tls_dir=str(tls))
        tls_lines = conf.split("ssl = on", 1)[1].split("\n\n", 1)[0]
        with open(server.data / "postgresql.conf", "a") as f:
            f.write("ssl = on" + tls_lines + "\n")
        # The rendered lines for the web hosts, and nothing else over TCP.
        hba = render("pg_hba.j2.conf", db).splitlines()
        (server.data / "pg_hba.conf").write_text(
            "local all all trust\n" + "\n".join(x for x in hba if x.startswith("hostssl")) + "\n"
        )
        server.start()
        url = _local(web.database_url, db.pki_dir / "ca.crt").replace(
            f":{db.postgres_port}/", f":{server.port}/"
        )

        async def check():
            conn = await asyncpg.connect(url, timeout=5)
            try:
                return await conn.fetchval(
                    "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
                )
            finally:
                await conn.close()

        assert asyncio.run(check()) is True
        # TLS 1.2 with a suite outside Mozilla's intermediate list (no forward secrecy,
        # CBC) is refused, where PostgreSQL's own default would take it.
        weak = ssl.create_default_context(cafile=str(db.pki_dir / "ca.crt"))
        weak.check_hostname = False
        weak.maximum_version = ssl.TLSVersion.TLSv1_2
        weak.set_ciphers("AES256-SHA:AES128-SHA:ECDHE-RSA-AES256-SHA:ECDHE-ECDSA-AES256-SHA")
        bare = url.split("?", 1)[0]
        with pytest.raises((ssl.SSLError, ConnectionError)):
            asyncio.run(asyncpg.connect(bare, ssl=weak, timeout=5))
        strong = ssl.create_default_context(cafile=str(db.pki_dir / "ca.crt"))
        strong.check_hostname = False
        strong.maximum_version = ssl.TLSVersion.TLSv1_2

        async def cipher():
            conn = await asyncpg.connect(bare, ssl=strong, timeout=5)
            try:
                return await conn.fetchval(
                    "SELECT cipher FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
                )
            finally:
                await conn.close()

        assert asyncio.run(cipher()) in db.tls12_ciphers.split(":")
        plain = url.split("?", 1)[0] + "?sslmode=disable"
        with pytest.raises(asyncpg.InvalidAuthorizationSpecificationError, match="no encryption"):
            asyncio.run(asyncpg.connect(plain, timeout=5))
        forged = _local(web.database_url, other_ca).replace(
            f":{db.postgres_port}/", f":{server.port}/"
        )
        with pytest.raises(ssl.SSLCertVerificationError):
            asyncio.run(asyncpg.connect(forged, timeout=5))
    finally:
        server.close()
        shutil.rmtree(tls, ignore_errors=True)


def test_redis_speaks_tls_only_and_the_app_verifies_it(data, environ, tmp_path, other_ca):
    environ = {**environ, "PRODSTACK_REDIS_PASSWORD": RedisServer.password}
    web, db = split(data, environ, tmp_path, address="127.0.0.1",
                    db_client_cidrs=["127.0.0.1/32"])  # fmt: skip
    cert, key = server_certificate(db.pki_dir, db.db_address)
    work = tmp_path / "redis"
    work.mkdir()
    conf = work / "redis.conf"
    conf.write_text(render("redis.j2.conf", db, tls_dir=str(db.pki_dir), maxmemory_mb=64))
    shutil.copy(cert, db.pki_dir / "server.crt")
    shutil.copy(key, db.pki_dir / "server.key")
    port = free_port()
    # The rendered file, with only what a test process must differ in overridden.
    proc = subprocess.Popen(
        ["redis-server", str(conf), "--tls-port", str(port), "--bind", "127.0.0.1",
         "--dir", str(work), "--logfile", str(work / "log"), "--pidfile", str(work / "pid"),
         "--supervised", "no", "--appendonly", "no", "--save", ""],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for_port(port)
        url = _local(web.redis_url, db.pki_dir / "ca.crt").replace(":6379/", f":{port}/")

        async def ping(u):
            client = PipelinedRedis(u, connect_timeout=3, reply_timeout=3)
            try:
                return await client.execute("PING")
            finally:
                await client.close()

        assert asyncio.run(ping(url)) == b"PONG"
        with pytest.raises(RedisUnavailable):
            asyncio.run(ping(url.replace("rediss://", "redis://")))
        with pytest.raises(RedisUnavailable):
            asyncio.run(ping(_local(web.redis_url, other_ca).replace(":6379/", f":{port}/")))
        # Only the TLS port listens: `port 0` came from the template.
        listening = subprocess.run(["ss", "-Htlnp"], capture_output=True, text=True).stdout
        assert [line for line in listening.splitlines() if f"pid={proc.pid}," in line] == [
            line for line in listening.splitlines() if f":{port} " in line
        ]
    finally:
        proc.terminate()
        proc.wait(10)


def test_firewall_expects_ufw_to_print_single_web_hosts_without_a_prefix(data, environ, tmp_path):
    # ufw normalises 10.0.0.10/32 to 10.0.0.10 in `ufw status`; comparing against the
    # CIDR made every run on a db host re-add its rules (a change on a converged host).
    from tasks.firewall import wanted_rules

    _, db = split(data, environ, tmp_path)
    lines = {line for _, line in wanted_rules(db)}
    assert {f"5432/tcp ALLOW IN {WEB_ADDRESS}", f"6379/tcp ALLOW IN {WEB_ADDRESS}"} <= lines


@pytest.mark.skipif(shutil.which("promtool") is None, reason="no promtool")
def test_internal_certificates_expiry_is_written_for_the_expiry_alert(data, environ, tmp_path):
    from tasks.pki import internal_expiries

    web, db = split(data, environ, tmp_path)
    cert, _ = server_certificate(db.pki_dir, db.db_address)
    leaf = x509.load_pem_x509_certificate(cert.read_bytes())
    ca = x509.load_pem_x509_certificate(ca_certificate(db.pki_dir).read_bytes())
    assert internal_expiries(web) == {CA_ON_HOST: int(ca.not_valid_after_utc.timestamp())}
    found = internal_expiries(db)
    end = int(leaf.not_valid_after_utc.timestamp())
    assert found == {
        CA_ON_HOST: int(ca.not_valid_after_utc.timestamp()),
        "/etc/postgresql/tls/server.crt": end,
        "/etc/redis/server.crt": end,
    }
    text = render("prodstack-internal-tls.j2.prom", db, expiries=found)
    check = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                           text=True)  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    assert text.count("prodstack_tls_certificate_expiry_timestamp_seconds{path=") == 3


def test_a_single_host_without_a_private_ca_writes_no_internal_expiry(data, environ):
    from tasks.pki import internal_expiries

    assert internal_expiries(settings_for(data, {"web", "db"}, environ=environ)) == {}
