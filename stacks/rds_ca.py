"""The RDS certificate authorities the API trusts, shipped inside its image.

The API and the migrate task connect with ``sslmode=verify-full`` against
``app/certs/rds-global-bundle.pem``: AWS's global bundle, published at
https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem (RDS User Guide,
"Using SSL/TLS to encrypt a connection to a DB instance", UsingWithRDS.SSL.html). The
image copies ``app/`` to ``/srv/app/app`` (app/Dockerfile), so the file needs no step
of its own, and the image tag, which hashes the build context, changes with it.

``python -m stacks.rds_ca [FILE]`` checks a bundle the way the tests check the shipped
one; ``scripts/update-rds-ca-bundle.sh`` downloads a new one and runs that check first.
"""

from __future__ import annotations

import datetime
import sys
from collections.abc import Iterable
from pathlib import Path

BUNDLE = Path(__file__).resolve().parents[1] / "app" / "certs" / "rds-global-bundle.pem"
# Where the API finds the bundle in its image: app/ is copied to /srv/app/app.
BUNDLE_IN_IMAGE = "/srv/app/app/certs/rds-global-bundle.pem"

# The root each CA identifier names, per region: "Amazon RDS <region> Root CA <suffix>".
# Source: RDS User Guide, UsingWithRDS.SSL.html ("Certificate authorities" table).
ROOT_SUFFIXES = {
    "rds-ca-rsa2048-g1": "RSA2048 G1",
    "rds-ca-rsa4096-g1": "RSA4096 G1",
    "rds-ca-ecc384-g1": "ECC384 G1",
}
# A root that expires sooner than this is a finding now, not on the day TLS breaks.
MIN_ROOT_LIFETIME = datetime.timedelta(days=365)


def problems(
    pem: bytes,
    regions: Iterable[str],
    ca_identifier: str,
    now: datetime.datetime | None = None,
) -> list[str]:
    """Everything wrong with ``pem`` as the API's trust store for ``regions``."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    now = now or datetime.datetime.now(datetime.UTC)
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError as exc:
        return [f"not a PEM certificate bundle: {exc}"]
    found: list[str] = []

    def attribute(cert, oid) -> str:
        values = cert.subject.get_attributes_for_oid(oid)
        return values[0].value if values else ""

    by_subject = {c.subject: c for c in certs}
    roots: dict[str, x509.Certificate] = {}
    for cert in certs:
        name = attribute(cert, NameOID.COMMON_NAME)
        if (attribute(cert, NameOID.ORGANIZATION_NAME) != "Amazon Web Services, Inc."
                or attribute(cert, NameOID.ORGANIZATIONAL_UNIT_NAME) != "Amazon RDS"):
            found.append(f"{name or cert.subject.rfc4514_string()!r} is not an Amazon RDS CA")
            continue
        if cert.not_valid_after_utc < now:
            found.append(f"{name!r} expired on {cert.not_valid_after_utc:%Y-%m-%d}")
        issuer = by_subject.get(cert.issuer)
        try:
            if issuer is None:
                raise ValueError("its issuer is not in the bundle")
            cert.verify_directly_issued_by(issuer)
        except (ValueError, TypeError) as exc:
            found.append(f"{name!r} does not chain inside the bundle: {exc}")
            continue
        if cert.issuer == cert.subject:
            roots[name] = cert
    suffix = ROOT_SUFFIXES.get(ca_identifier)
    if suffix is None:
        return [*found, f"unknown CA identifier {ca_identifier!r}; known: "
                        f"{', '.join(ROOT_SUFFIXES)}"]
    for region in regions:
        root = roots.get(f"Amazon RDS {region} Root CA {suffix}")
        if root is None:
            found.append(f"no {ca_identifier} root for {region}")
        elif root.not_valid_after_utc - now < MIN_ROOT_LIFETIME:
            found.append(f"the {ca_identifier} root for {region} expires on "
                         f"{root.not_valid_after_utc:%Y-%m-%d}")
    return found


def main(argv: list[str]) -> int:
    from components.database import CA_CERT_IDENTIFIER
    from stacks.config import REGIONS

    path = Path(argv[0]) if argv else BUNDLE
    try:
        pem = path.read_bytes()
    except OSError as exc:
        print(f"{path}: {exc.strerror}", file=sys.stderr)
        return 2
    found = problems(pem, REGIONS, CA_CERT_IDENTIFIER)
    for problem in found:
        print(f"{path}: {problem}", file=sys.stderr)
    if not found:
        print(f"{path}: {pem.count(b'BEGIN CERTIFICATE')} certificates; a {CA_CERT_IDENTIFIER} "
              f"root for each of the {len(REGIONS)} regions")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
