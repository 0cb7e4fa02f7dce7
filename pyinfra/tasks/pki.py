"""The private CA that secures PostgreSQL and Redis between hosts (split layout only).

Everything here runs on the operator's machine, during pyinfra's prepare phase, before any
host changes. The CA lives in `pki_dir` (default: `pki/` next to `secrets_file`):

    ca.key              the CA's private key, mode 0600: never leaves this directory
    ca.crt              the CA certificate: copied to every host as /etc/prodstack/ca.crt
    db-<address>.key    one db host's server key (0600), uploaded only to that host
    db-<address>.crt    its certificate, for its private address and 127.0.0.1

Keep the directory with the secrets file (and in the same password manager backup): a
new CA means new certificates everywhere on the next deploy. A server certificate is
issued again when its addresses change, when it was signed by another CA, or when it
has fewer than RENEW_DAYS left; the next deploy ships it and restarts what uses it.
"""

from __future__ import annotations

import datetime
import fcntl
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pyinfra.operations import files

from tasks.templates import put_secret

CA_DAYS = 3650
SERVER_DAYS = 825
RENEW_DAYS = 30
# Where the CA certificate sits on every host; the API containers see the same path.
CA_ON_HOST = "/etc/prodstack/ca.crt"
# Where a db host keeps its server certificate, for PostgreSQL and for Redis.
POSTGRES_TLS_DIR = "/etc/postgresql/tls"
REDIS_TLS_DIR = "/etc/redis"
SERVER_CERTIFICATE_DIRS = (POSTGRES_TLS_DIR, REDIS_TLS_DIR)


def upload_ca(cfg, *, label: str):
    """The CA certificate (public) at CA_ON_HOST. Returns the operation."""
    files.directory(name="Config directory", path="/etc/prodstack", mode="750")
    return files.put(
        name=f"Private CA certificate ({label})",
        src=str(ca_certificate(cfg.pki_dir)),
        dest=CA_ON_HOST,
        mode="644",
        user="root",
        group="root",
    )


def upload_server_certificate(
    cfg, *, directory: str, owner: str, label: str, make_directory: bool = True
) -> list:
    """This db host's certificate and key as `directory`/server.{crt,key}, the key readable
    by `owner` only. Returns the operations (a change means the service must reload).
    `make_directory=False` for a directory the service's package owns."""
    cert, key = server_certificate(cfg.pki_dir, cfg.db_address)
    if make_directory:
        files.directory(
            name=f"TLS directory for {label}", path=directory, mode="700", user=owner,
            group=owner,
        )  # fmt: skip
    return [
        files.put(
            name=f"{label} server certificate", src=str(cert), dest=f"{directory}/server.crt",
            mode="644", user=owner, group=owner,
        ),
        put_secret(
            name=f"{label} server key (0600)", src=str(key), dest=f"{directory}/server.key",
            mode="600", user=owner, group=owner,
        ),
    ]  # fmt: skip


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write atomically with the final mode from the start (keys are never world-readable)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "prodstack"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _ensure_ca(directory: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key_path, cert_path = directory / "ca.key", directory / "ca.crt"
    if key_path.exists() and cert_path.exists():
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        return x509.load_pem_x509_certificate(cert_path.read_bytes()), key
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    name = _name("prodstack private CA")
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
        # A CA that signs only end-entity certificates.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )  # fmt: skip
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    _write(key_path, _key_pem(key), 0o600)
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return cert, key


def _still_good(cert_path: Path, ca: x509.Certificate, addresses: set[str]) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        cert.verify_directly_issued_by(ca)
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (FileNotFoundError, ValueError, TypeError, x509.ExtensionNotFound, InvalidSignature):
        # Missing, unreadable, or signed by an earlier CA.
        return False
    have = {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}
    left = cert.not_valid_after_utc - _now()
    return have == addresses and left > datetime.timedelta(days=RENEW_DAYS)


def _issue(directory: Path, stem: str, ca, ca_key, addresses: set[str]) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(stem))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=SERVER_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address(a)) for a in sorted(addresses)]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write(directory / f"{stem}.key", _key_pem(key), 0o600)
    _write(directory / f"{stem}.crt", cert.public_bytes(serialization.Encoding.PEM), 0o644)


def ca_certificate(directory: Path) -> Path:
    """The CA certificate's local path, creating the CA on first use."""
    with _locked(directory):
        _ensure_ca(directory)
    return directory / "ca.crt"


def server_certificate(directory: Path, address: str) -> tuple[Path, Path]:
    """(certificate, key) for the db host at `address`, valid for it and for 127.0.0.1."""
    stem = f"db-{ipaddress.ip_address(address)}"
    addresses = {str(ipaddress.ip_address(address)), "127.0.0.1"}
    with _locked(directory):
        ca, ca_key = _ensure_ca(directory)
        if not _still_good(directory / f"{stem}.crt", ca, addresses):
            _issue(directory, stem, ca, ca_key, addresses)
    return directory / f"{stem}.crt", directory / f"{stem}.key"


class _locked:
    """One writer at a time: pyinfra prepares several hosts in one process."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def __enter__(self):
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.lock = open(self.directory / ".lock", "w")
        fcntl.flock(self.lock, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.lock, fcntl.LOCK_UN)
        self.lock.close()


def internal_expiries(cfg) -> dict[str, int]:
    """{path on the host: expiry (Unix seconds)} of the private CA's certificates this host
    holds. They change only when a deploy uploads new ones, so the deploy writes these
    for node exporter's textfile collector and CertificateExpiresSoon watches them."""
    if not cfg.db_tls:
        return {}
    ca = x509.load_pem_x509_certificate(ca_certificate(cfg.pki_dir).read_bytes())
    found = {CA_ON_HOST: int(ca.not_valid_after_utc.timestamp())}
    if cfg.is_db:
        cert, _ = server_certificate(cfg.pki_dir, cfg.db_address)
        leaf = x509.load_pem_x509_certificate(cert.read_bytes())
        for directory in SERVER_CERTIFICATE_DIRS:
            found[f"{directory}/server.crt"] = int(leaf.not_valid_after_utc.timestamp())
    return found
