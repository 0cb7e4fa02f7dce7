"""Settings for one host, resolved from inventory data and checked before any change.

Every task takes the `Settings` this module builds. `settings_for(host)` runs first in
`deploy.py`, during pyinfra's prepare phase, so bad data stops the run before a single
command changes the host. The error lists every problem at once, one line each, in the
cloud's format (prodstack/profile.py `Problem`: the key, the value unless it may be a
credential, and what is allowed).

Data precedence is pyinfra's own: `--data` on the CLI, then host data in the inventory,
then `group_data/<group>.py`, then `group_data/all.py` (the defaults).

The keys both targets share (`size`, `replicas`, `domain`, `log_level`, ...) and the VPS
keys that are rules of one field (ports, timeouts, names, ...) are checked by the model
`VpsProfile` in prodstack/profile.py; old names of shared keys (`app_log_level`,
`rate_limit_rps`, ...) work for one release, with a warning. The rules across keys, and
the keys that need the operator's machine (files, secrets), are checked here.
"""

from __future__ import annotations

import ast
import difflib
import hashlib
import hmac
import ipaddress
import os
import re
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from prodstack import budget, profile, sizes
from prodstack.image_contract import release_settings
from pyinfra.api.exceptions import DeployError

from tasks.pki import CA_ON_HOST

PYINFRA_DIR = Path(__file__).resolve().parents[1]
REPO_DIR = PYINFRA_DIR.parent

# Per-replica container limits and default replica counts, by size (the one size table,
# prodstack/sizes.py), as the keys that override them are named.
SIZES: dict[str, dict[str, Any]] = {
    name: {"replicas": size.replicas, "container_memory_mb": size.container_memory_mb,
           "container_cpus": size.container_cpus}
    for name, size in sizes.VPS.items()
}  # fmt: skip

# Secrets the stack needs, by name. Each is read from PRODSTACK_<NAME> in the environment
# or from the secrets file (KEY=value lines, kept outside git).
REQUIRED_SECRETS = ("POSTGRES_PASSWORD", "REDIS_PASSWORD", "API_TOKEN")
S3_SECRETS = ("BACKUP_S3_ACCESS_KEY_ID", "BACKUP_S3_SECRET_ACCESS_KEY")
# A db host's secrets: the passphrase both pgBackRest repositories are encrypted with.
DB_SECRETS = ("BACKUP_CIPHER_PASSPHRASE",)
SECRET_PATTERN = re.compile(r"^[A-Za-z0-9._~+/=-]{16,}$")

# Suffixes that never resolve publicly, so Let's Encrypt can't validate them.
PRIVATE_SUFFIXES = (".test", ".example", ".invalid", ".localhost", ".local", ".internal", ".lan")
# Redis ACL users: the app's (REDIS_PASSWORD), the health check's (PING only) and the
# metrics exporter's (server statistics only).
REDIS_USER = "prodstack"
REDIS_HEALTH_USER = "healthcheck"
REDIS_MONITOR_USER = "prodstack-monitor"
RESERVED_PORTS = {80: "http", 443: "https"}  # plus the SSH port pyinfra connects on
# Data keys read outside group_data/all.py's names: restore.py's and backup.py's arguments,
# and the old names of keys renamed to the shared vocabulary (prodstack/profile.py).
EXTRA_KEYS = frozenset({"restore_to", "restore_repo", "confirm", "backup_type", "rollback_to",
                        *profile.RENAMED["vps"]})
BUCKET_PATTERN = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
# Loopback ports of the monitoring stack (Debian's defaults where it has one); the app's
# ports must not take them.
MONITORING_PORTS = {
    "prometheus": 9090,
    "alertmanager": 9093,
    "node exporter": 9100,
    "nginx exporter": 9113,
    "redis exporter": 9121,
    "postgres exporter": 9187,
    "nginx stub_status": 9145,
    "grafana": 3000,
}
# Optional secrets: read when the feature that needs them is configured. The two URLs
# carry their receiver's token (a Slack webhook, a dead man's switch's ping ID).
ALERT_SECRETS = (
    "ALERT_SMTP_PASSWORD", "ALERT_WEBHOOK_URL", "ALERT_HEARTBEAT_URL", "GRAFANA_ADMIN_PASSWORD"
)  # fmt: skip
SECRET_NAMES = (*REQUIRED_SECRETS, *S3_SECRETS, *DB_SECRETS, *ALERT_SECRETS)
# An http(s) URL without user:password@, quotes, backslashes or white space: it is written
# into a double-quoted YAML string.
URL_PATTERN = re.compile(r"https?://[^\s/@\"'\\]+(:\d+)?(/[^\s\"'\\]*)?")
EMAIL_PATTERN = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
DEPLOY_STRATEGIES = profile.DEPLOY_STRATEGIES
# TLS 1.2 suites of Mozilla's intermediate profile (forward secret, AEAD), for nginx and
# for PostgreSQL between hosts; TLS 1.3's suites are OpenSSL's own, all AEAD.
# Source: https://ssl-config.mozilla.org/#config=intermediate (the TLS 1.2 cipher list)
TLS12_CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
)  # fmt: skip


class SettingsError(DeployError):
    """Invalid inventory data, raised before any operation runs with every problem found
    (`problems`, prodstack/profile.py's one format), each a line of the message. A failure
    that is no bad value (a local build) gives a message and no problems."""

    def __init__(self, message: str | Sequence[profile.Problem]) -> None:
        self.problems = () if isinstance(message, str) else tuple(message)
        super().__init__(message if isinstance(message, str) else "\n".join(map(str, message)))


@dataclass(frozen=True)
class Settings:
    """Everything the tasks need for one host, validated and with defaults resolved."""

    roles: frozenset[str]
    size: str
    replicas: int
    container_memory_mb: int
    container_cpus: float
    domain: str | None
    server_name: str
    tls: str  # letsencrypt | provided | selfsigned
    letsencrypt_email: str | None
    tls_certificate_file: str | None
    tls_key_file: str | None
    image: str | None
    image_pull: bool
    app_port_base: int
    app_spare_port_base: int
    log_level: str
    rate_limit_per_minute: int
    ready_timeout_seconds: int
    migrate_timeout_seconds: int
    drain_seconds: int
    deploy_strategy: str  # rolling | blue_green
    bake_seconds: int
    keep_releases: int
    app_context: Path | None
    deploy_user: str
    deploy_user_public_keys: tuple[str, ...]
    ssh_permit_root_login: str
    ssh_port: int
    ssh_next_port: int | None
    """The port sshd, ufw and fail2ban take on beside `ssh_port` (the first step of a move);
    None once pyinfra connects on it."""
    ssh_user: str
    docker_subnet: str
    docker_gateway: str
    docker_bridge: str
    postgres_db: str
    postgres_user: str
    postgres_port: int
    postgres_version: str | None
    postgres_memory_percent: int
    postgres_max_connections: int
    db_address: str  # where containers reach PostgreSQL and Redis
    db_listen_addresses: tuple[str, ...]
    db_client_cidrs: tuple[str, ...]
    # Split layout: PostgreSQL and Redis speak TLS only, with certificates from the
    # private CA in `pki_dir` (tasks/pki.py). A single host keeps the bridge plaintext.
    db_tls: bool
    pki_dir: Path
    redis_port: int
    redis_memory_percent: int
    edge_rate_limit_per_minute: int
    rate_limit_burst: int
    rate_limit_exempt_cidrs: tuple[str, ...]
    # Load balancers that speak the PROXY protocol to proxy_protocol_port (a TCP balancer in
    # front of several web hosts): nginx takes the client's address from their header.
    proxy_protocol_from: tuple[str, ...]
    proxy_protocol_port: int
    # An HTTP proxy or CDN in front: nginx believes their X-Forwarded-For.
    forwarded_for_from: tuple[str, ...]
    client_max_body_size: str
    backup_retention_days: int
    backup_weekly_retention_days: int
    backup_monthly_retention_days: int
    backup_archive_timeout_seconds: int
    backup_full_calendar: str
    backup_diff_calendar: str
    backup_drill_calendar: str
    backup_offsite_drill_calendar: str
    backup_s3_bucket: str | None
    backup_s3_prefix: str
    backup_s3_endpoint_url: str | None
    backup_s3_region: str
    metrics_retention_days: int
    metrics_retention_disk_percent: int
    metrics_allowed_cidrs: tuple[str, ...]
    grafana_allowed_cidrs: tuple[str, ...]
    alert_email: str | None
    alert_email_from: str
    alert_smarthost: str | None
    alert_smarthost_user: str | None
    grafana: bool
    backup_s3_uri_style: str
    backup_s3_ca_file: str | None
    secrets: Mapping[str, str] = field(repr=False)
    warnings: tuple[str, ...] = ()
    """Old key names that were used (each still works for one release)."""
    postgres_login: str | None = None
    """The login role the replicas use (one of `postgres_login_roles`): decided from the db
    host's roles in each run (tasks/postgres.py, `with_app_login`), None until then."""

    @property
    def nginx_limit_rate(self) -> str:
        """`edge_rate_limit_per_minute` as nginx's limit_req_zone rate: per second when it
        divides evenly (nginx keeps the same per-millisecond rate either way)."""
        per_minute = self.edge_rate_limit_per_minute
        return f"{per_minute // 60}r/s" if per_minute % 60 == 0 else f"{per_minute}r/m"

    @property
    def tls12_ciphers(self) -> str:
        return ":".join(TLS12_CIPHERS)

    @property
    def ssh_ports(self) -> tuple[int, ...]:
        """The ports sshd listens on and ufw opens: the one pyinfra connects on first."""
        return (self.ssh_port,) + ((self.ssh_next_port,) if self.ssh_next_port else ())

    @property
    def is_web(self) -> bool:
        return "web" in self.roles

    @property
    def is_db(self) -> bool:
        return "db" in self.roles

    @property
    def contract(self) -> dict[str, int]:
        """The image contract's port, stop timeout and /tmp size (prodstack/image_contract.py)."""
        return release_settings()

    @property
    def app_ports(self) -> list[int]:
        return [self.app_port_base + i for i in range(self.replicas)]

    @property
    def app_spare_ports(self) -> list[int]:
        return [self.app_spare_port_base + i for i in range(self.replicas)]

    @property
    def alert_webhook_url(self) -> str | None:
        """The secret ALERT_WEBHOOK_URL (never data: the URL holds the receiver's token)."""
        return self.secrets.get("ALERT_WEBHOOK_URL") or None

    @property
    def alert_heartbeat_url(self) -> str | None:
        """The secret ALERT_HEARTBEAT_URL: whoever has it can keep the switch quiet."""
        return self.secrets.get("ALERT_HEARTBEAT_URL") or None

    @property
    def alert_receivers(self) -> tuple[str, ...]:
        """The configured ways an alert reaches a person: email, webhook, or none."""
        return tuple(
            name
            for name, value in (("email", self.alert_email), ("webhook", self.alert_webhook_url))
            if value
        )

    @property
    def postgres_login_roles(self) -> tuple[str, str]:
        """The two login roles, members of the owner `postgres_user` (which cannot log in),
        used in turns so a password rotation never refuses a connection (tasks/postgres.py)."""
        return (f"{self.postgres_user}_a", f"{self.postgres_user}_b")

    @property
    def postgres_generation(self) -> str:
        """Which login role and POSTGRES_PASSWORD generation this host's replicas use (the
        role, and the password's one-way fingerprint: tasks/rotation.py)."""
        return f"{self._login()}:{password_fingerprint(self.secrets['POSTGRES_PASSWORD'])}"

    def _login(self) -> str:
        if self.postgres_login is None:
            raise RuntimeError("postgres_login is decided from the db host's roles first "
                               "(tasks/postgres.py, with_app_login)")  # fmt: skip
        return self.postgres_login

    @property
    def database_url(self) -> str:
        login = self._login()
        password = quote(self.secrets["POSTGRES_PASSWORD"], safe="")
        # verify-full: the server's certificate must come from our CA and name db_address.
        # On one host the bridge never leaves the kernel: no TLS, said explicitly rather
        # than libpq's `prefer` against Debian's snakeoil certificate.
        tls = f"sslmode=verify-full&sslrootcert={CA_ON_HOST}" if self.db_tls else "sslmode=disable"
        return (
            f"postgresql://{login}:{password}@{self.db_address}:"
            f"{self.postgres_port}/{self.postgres_db}?{tls}"
        )

    redis_user: str = REDIS_USER
    redis_health_user: str = REDIS_HEALTH_USER
    redis_monitor_user: str = REDIS_MONITOR_USER

    @property
    def backup_s3_endpoint(self) -> tuple[str, int | None] | None:
        """(host, port) of the S3 endpoint, as pgBackRest's repo2-s3-endpoint/-storage-port."""
        if not self.backup_s3_endpoint_url:
            return None
        url = urlsplit(self.backup_s3_endpoint_url)
        return url.hostname, url.port

    @property
    def redis_url(self) -> str:
        """The app's Redis URL, built here only (the env file and the checks use it)."""
        password = quote(self.secrets["REDIS_PASSWORD"], safe="")
        if self.db_tls:
            # rediss: the app verifies the certificate and host against our CA only.
            return (
                f"rediss://{self.redis_user}:{password}@{self.db_address}:{self.redis_port}/0"
                f"?ssl_ca_certs={CA_ON_HOST}"
            )
        return f"redis://{self.redis_user}:{password}@{self.db_address}:{self.redis_port}/0"

    def _derived_redis_password(self, purpose: bytes) -> str:
        """A password derived one way from REDIS_PASSWORD: it needs no secret of its own,
        rotates with REDIS_PASSWORD and reveals nothing of it."""
        key = self.secrets["REDIS_PASSWORD"].encode()
        return hmac.new(key, purpose, "sha256").hexdigest()

    @property
    def redis_health_password(self) -> str:
        """The ping-only health check user's password."""
        return self._derived_redis_password(b"prodstack redis healthcheck")

    @property
    def redis_monitor_password(self) -> str:
        """The redis exporter's password (in its 0600 environment file)."""
        return self._derived_redis_password(b"prodstack-monitor")

    @property
    def redis_password_fingerprint(self) -> str:
        """Which REDIS_PASSWORD generation this host's settings carry (tasks/rotation.py)."""
        return password_fingerprint(self.secrets["REDIS_PASSWORD"])


def password_fingerprint(password: str) -> str:
    """A short one-way name for a password's generation: hosts compare it to tell whether
    they run on the same password, and it can be written down in the open."""
    return hmac.new(password.encode(), b"prodstack password generation", "sha256").hexdigest()[:16]


def redis_password_hash(password: str) -> str:
    """How a Redis ACL stores a password (`#<sha256 hex>`, without the `#`), so redis.conf
    holds no password."""
    return hashlib.sha256(password.encode()).hexdigest()


def fail(key: str, value: Any, allowed: str) -> SettingsError:
    """One problem as the error, for a check of one key (a deploy file's own argument)."""
    return SettingsError([profile.Problem(key, value, allowed)])


def read_secrets_file(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    if not path.exists():
        return values
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if "=" not in line:
            raise fail("secrets_file", str(path),
                       f"a file of KEY=value lines (line {number} is not KEY=value)")
        key, value = line.split("=", 1)
        values[key.strip()] = value.strip().strip("'\"")
    return values


def secrets_path(data: Mapping[str, Any]) -> Path:
    path = Path(os.path.expanduser(str(data.get("secrets_file") or PYINFRA_DIR / "secrets.env")))
    return path if path.is_absolute() else PYINFRA_DIR / path


def pki_path(data: Mapping[str, Any]) -> Path:
    """`pki_dir`, default `pki/` next to the secrets file (both stay on the operator's side)."""
    value = data.get("pki_dir")
    if value in (None, ""):
        return secrets_path(data).parent / "pki"
    path = Path(os.path.expanduser(str(value)))
    return path if path.is_absolute() else PYINFRA_DIR / path


def load_secrets(
    p: profile.Problems,
    data: Mapping[str, Any],
    names: tuple[str, ...],
    environ: Mapping[str, str] = os.environ,
) -> dict[str, str]:
    """PRODSTACK_<NAME> from the environment wins over the secrets file. A missing or weak
    secret is a problem named by the secret, its value never shown."""
    secrets_file = secrets_path(data)
    try:
        from_file = read_secrets_file(secrets_file)
    except SettingsError as error:
        p.extend(error.problems)
        return {}
    secrets = {}
    for name in names:
        value = environ.get(f"PRODSTACK_{name}") or from_file.get(name)
        if not value:
            p.add(name, None, f"a secret, from PRODSTACK_{name} in the environment or "
                  f"{name}=... in {secrets_file} (`python pyinfra/new_secrets.py` writes one)")
        elif not SECRET_PATTERN.match(value):
            p.add(name, value, "16+ characters from A-Z a-z 0-9 . _ ~ + / = - "
                  "(new_secrets.py generates such values)", shown=False)  # fmt: skip
        else:
            secrets[name] = value
    return secrets


def _int(p: profile.Problems, data: Mapping[str, Any], key: str, *, minimum: int,
         maximum: int = 10**9) -> int:  # fmt: skip
    """`data[key]` as a whole number in range; on a problem, `minimum` stands in (the checks
    that read the key skip it: `p.ok`)."""
    value = data.get(key)
    try:
        number = int(value)
        whole = not isinstance(value, bool) and not (isinstance(value, float) and value != number)
    except (TypeError, ValueError):
        number, whole = minimum, False
    if not whole or not minimum <= number <= maximum:
        p.add(key, value, f"a whole number from {minimum} to {maximum}")
        return minimum
    return number


def _app_context(p: profile.Problems, data: Mapping[str, Any]) -> Path | None:
    """A build context other than app/: a local directory with a Dockerfile."""
    value = data.get("app_context")
    if value in (None, ""):
        return None
    path = Path(os.path.expanduser(str(value)))
    path = path if path.is_absolute() else REPO_DIR / path
    if not (path / "Dockerfile").is_file():
        p.add("app_context", value, "a local directory with a Dockerfile (relative paths "
              "are from the repository root); see docs/image-contract.md")  # fmt: skip
        return None
    return path.resolve()


def _pattern(p: profile.Problems, key: str, value: Any, pattern: str | re.Pattern[str],
             allowed: str) -> str:  # fmt: skip
    """`value` if it is a string `pattern` matches whole, else a problem (and "" stands in).
    Whole: `$` alone lets a trailing newline through, and these values reach commands."""
    if isinstance(value, str) and re.fullmatch(pattern, value):
        return value
    p.add(key, value, allowed)
    return ""


def _cidrs(p: profile.Problems, data: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = data.get(key) or ()
    if isinstance(value, str):
        value = [value]
    try:
        return tuple(str(ipaddress.ip_network(v, strict=False)) for v in value)
    except (TypeError, ValueError) as error:
        p.add(key, data.get(key), f"a list of CIDRs ({error})")
        return ()


def _trusted_proxies(p: profile.Problems, data: Mapping[str, Any], key: str,
                     what: str) -> tuple[str, ...]:  # fmt: skip
    """The addresses whose word on the client's address nginx takes: never everyone."""
    cidrs = _cidrs(p, data, key)
    if any(ipaddress.ip_network(cidr).prefixlen == 0 for cidr in cidrs):
        p.add(key, data.get(key), f"the proxies' addresses, not everyone: {what} sets the "
              "client's address, so whoever may send one may pose as any client")  # fmt: skip
        return ()
    return cidrs


def backup_tiers(p: profile.Problems, vps: profile.VpsProfile) -> dict[str, int]:
    """The daily, weekly and monthly tiers' retentions in days (each checked by the model),
    each at least the one before."""
    keys = ("backup_retention_days", "backup_weekly_retention_days",
            "backup_monthly_retention_days")  # fmt: skip
    days = {key: getattr(vps, key) for key in keys}
    for shorter, key in zip(keys, keys[1:], strict=False):
        if p.ok(key, shorter) and days[key] < days[shorter]:
            p.add(key, days[key], f"at least `{shorter}` ({days[shorter]})")
    return days


def validate_s3(p: profile.Problems, data: Mapping[str, Any], bucket: str | None
                ) -> dict[str, Any]:  # fmt: skip
    """The off-site repository's settings; pgBackRest 2.45 reaches S3 over HTTPS only
    (`backup_s3_uri_style` is the model's)."""
    if bucket is not None and not BUCKET_PATTERN.match(str(bucket)):
        p.add("backup_s3_bucket", bucket, "an S3 bucket name (3-63 of a-z 0-9 . -)")
    endpoint = data.get("backup_s3_endpoint_url") or None
    if endpoint is not None:
        url = urlsplit(str(endpoint))
        try:
            url.port  # noqa: B018 (raises on a bad port)
        except ValueError:
            url = url._replace(netloc="")
        if url.scheme != "https" or not url.hostname or url.path not in ("", "/"):
            p.add("backup_s3_endpoint_url", endpoint,
                  "https://HOST[:PORT] (pgBackRest 2.45 speaks S3 over HTTPS only)")
    ca_file = data.get("backup_s3_ca_file") or None
    if ca_file is not None and not Path(ca_file).is_file():
        p.add("backup_s3_ca_file", ca_file, "a readable local PEM file")
    prefix = str(data.get("backup_s3_prefix") or "prodstack").strip("/")
    if not re.match(r"^[A-Za-z0-9._/-]+$", prefix):
        p.add("backup_s3_prefix", prefix, "letters, digits and . _ - /")
    return {
        "backup_s3_prefix": prefix,
        "backup_s3_endpoint_url": str(endpoint).rstrip("/") if endpoint else None,
        "backup_s3_region": s3_region(p, data.get("backup_s3_region") or "us-east-1"),
        "backup_s3_ca_file": ca_file,
    }


def s3_region(p: profile.Problems, value: Any) -> str:
    """A region name as S3 and S3-compatible stores use them (us-east-1, auto, garage):
    it is written into pgbackrest.conf, so no space, newline or `=`."""
    return _pattern(p, "backup_s3_region", value, r"^[a-z0-9][a-z0-9-]{0,31}$",
                    "a region name such as eu-west-1")  # fmt: skip


def login_name(p: profile.Problems, value: Any) -> str:
    """A POSIX login name (what useradd accepts by default): it reaches usermod."""
    return _pattern(p, "ssh_user", value, r"^[a-z_][a-z0-9_-]{0,31}$",
                    "a login name such as admin (a-z 0-9 _ -)")  # fmt: skip


def pg_version(p: profile.Problems, value: Any) -> str | None:
    """A PostgreSQL major version (13 or later): it names paths and packages on the host."""
    if value in (None, ""):
        return None
    if not re.match(r"^[1-9][0-9]$", str(value)) or int(value) < 13:
        p.add("postgres_version", value, "a PostgreSQL major version such as 15 (13 or later)")
        return None
    return str(value)


def public_keys_for(p: profile.Problems, data: Mapping[str, Any]) -> tuple[str, ...]:
    """The deploy user's keys: given explicitly, else the public half of `ssh_key`."""
    keys = data.get("deploy_user_public_keys")
    if isinstance(keys, str):
        keys = [keys]
    if keys:
        # One problem for the key, at the first line that is no public key.
        found = []
        for line in keys:
            if not (key := public_key(p, line)):
                return ()
            found.append(key)
        return tuple(found)
    ssh_key = data.get("ssh_key")
    if ssh_key:
        private = Path(os.path.expanduser(ssh_key))
        public = Path(str(private) + ".pub")
        if public.exists():
            return (public.read_text().strip(),)
        if private.exists():
            derived = subprocess.run(
                ["ssh-keygen", "-y", "-f", str(private)], capture_output=True, text=True
            )
            if derived.returncode == 0:
                return (derived.stdout.strip(),)
    p.add("deploy_user_public_keys", keys, "the deploy user's public key(s); or set `ssh_key` "
          "to a key whose .pub exists")  # fmt: skip
    return ()


# One OpenSSH public key line without options (authorized_keys options such as
# command= would change what the key may do): type, base64 blob, optional comment.
PUBLIC_KEY_PATTERN = re.compile(
    r"^(ssh|ecdsa|sk)-[a-z0-9@.-]+ [A-Za-z0-9+/]+={0,3}( [^\x00-\x1f\x7f]*)?$"
)


def public_key(p: profile.Problems, value: Any) -> str:
    """One public key line, parsed as OpenSSH does (it goes into authorized_keys); "" and a
    problem if it is none."""
    key = str(value).strip()
    if not PUBLIC_KEY_PATTERN.match(key) or len(key) > 16384:
        p.add("deploy_user_public_keys", value, "OpenSSH public key lines (ssh-ed25519 "
              "AAAA... comment), no options or newlines")  # fmt: skip
        return ""
    from cryptography.hazmat.primitives.serialization import load_ssh_public_key

    try:
        load_ssh_public_key(key.encode())
    except (ValueError, TypeError) as error:
        p.add("deploy_user_public_keys", value, f"OpenSSH public keys ({error})")
        return ""
    return key


def data_defaults() -> dict[str, Any]:
    """group_data/all.py's values: what pyinfra merges under every host's own data.

    The file is data, so it is read as data: each top-level `name = literal`, without
    running it. Anything else there (an import, a computed value) is refused by name."""
    path = PYINFRA_DIR / "group_data" / "all.py"
    defaults: dict[str, Any] = {}
    for node in ast.parse(path.read_text(), filename=str(path)).body:
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue  # the docstring
        targets = node.targets if isinstance(node, ast.Assign) else []
        if len(targets) != 1 or not isinstance(targets[0], ast.Name):
            raise DeployError(f"{path}:{node.lineno}: only `name = value` lines belong here")
        try:
            defaults[targets[0].id] = ast.literal_eval(node.value)
        except ValueError:
            raise DeployError(f"{path}:{node.lineno}: `{targets[0].id}` must be a literal "
                              "value (a string, number, list, dict, True/False/None)") from None
    return defaults


def known_keys() -> frozenset[str]:
    """group_data/all.py's names, EXTRA_KEYS, and the keys pyinfra itself reads from host
    data: every connector's (ssh_port, ssh_key, ...) and the global arguments (_sudo, ...)."""
    from pyinfra.api.arguments import all_global_arguments
    from pyinfra.api.connectors import get_all_connectors

    names = set(data_defaults()) | EXTRA_KEYS
    for connector in get_all_connectors().values():
        names.update(getattr(connector, "data_meta", {}))
    names.update(k for k, _ in all_global_arguments() if k.startswith("_"))
    return frozenset(names)


def check_known_keys(p: profile.Problems, data: Mapping[str, Any]) -> None:
    """Refuse a key nothing reads (a typo, or a key of a newer version), naming the closest
    known one. The cloud profile words its refusal the same way (stacks/config.py)."""
    known = known_keys()
    for key in sorted(set(data) - known):
        close = difflib.get_close_matches(key, known, n=1)
        hint = f"; did you mean `{close[0]}`?" if close else ""
        p.add(key, data[key], f"a known key{hint} (the names in pyinfra/group_data/all.py, "
              "or a pyinfra connector key such as ssh_port or _sudo)")  # fmt: skip


# A credential in data ends up in plans, pull-request comments, shell history and git.
# Secrets come only from the secrets file or PRODSTACK_<NAME>; data that looks like one is
# refused by name, before anything else is checked. The heuristics, kept few on purpose:
# - a data key that is a secret's name in any case (`api_token`, `POSTGRES_PASSWORD`);
# - an upper-case data key with PASSWORD, PASSPHRASE, SECRET, TOKEN or KEY in it;
# - a value (anywhere inside lists and dicts) that holds a URL with user:password@, a
#   Slack, Discord or Microsoft Teams webhook, an AWS access key ID, a Slack, GitHub or
#   GitLab token, or a PEM private key.
SECRET_KEY_WORDS = re.compile(r"PASSWORD|PASSPHRASE|SECRET|TOKEN|KEY")
CREDENTIAL_SHAPES = (
    ("a URL with user:password@", re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*:[^/\s@]+@")),
    ("a webhook URL", re.compile(
        r"hooks\.slack\.com/services/|discord(?:app)?\.com/api/webhooks/|\.webhook\.office\.com/",
        re.IGNORECASE)),
    ("an access token", re.compile(
        r"\b(?:(?:AKIA|ASIA)[0-9A-Z]{16}|xox[abeoprs]-[A-Za-z0-9-]{10,}|gh[opsru]_[A-Za-z0-9]{30,}"
        r"|github_pat_\w{20,}|glpat-[\w-]{20,})")),
    ("a private key", re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----")),
)  # fmt: skip


def _credential_shape(value: Any) -> str | None:
    """What in a data value looks like a credential, or None."""
    if isinstance(value, str):
        return next((what for what, shape in CREDENTIAL_SHAPES if shape.search(value)), None)
    if isinstance(value, Mapping):
        value = [*value.keys(), *value.values()]
    if isinstance(value, (list, tuple, set, frozenset)):
        return next((found for item in value if (found := _credential_shape(item))), None)
    return None


def check_no_credentials(data: Mapping[str, Any]) -> None:
    """Refuse every credential given as data (--data, the inventory, group_data), naming
    the key and the secret it belongs in, never echoing the value. Raised before any other
    check, which would show the value."""
    elsewhere = (f"prodstack reads its secrets ({', '.join(SECRET_NAMES)}) only from the "
                 "secrets file or PRODSTACK_<NAME>")  # fmt: skip
    p = profile.Problems()
    for key in sorted(data, key=str):
        name, why = str(key).upper(), None
        if name in SECRET_NAMES:
            p.add(str(key), data[key], f"nothing: credentials are never data; move it to the "
                  f"secrets file as {name}=... (pyinfra/secrets.env, or the file `secrets_file` "
                  f"names), or set PRODSTACK_{name}", shown=False)  # fmt: skip
            continue
        if key == name and SECRET_KEY_WORDS.search(name):
            why = "its name says credential"
        elif shape := _credential_shape(data[key]):
            why = f"it holds {shape}"
        if why:
            p.add(str(key), data[key], f"no credential ({why}): credentials are never data; "
                  f"{elsewhere}", shown=False)  # fmt: skip
    if p:
        raise SettingsError(p)


def check_ports(p: profile.Problems, ports: Mapping[str, list[int]], ssh_port: int = 22,
                ssh_next_port: int | None = None) -> None:  # fmt: skip
    """Every port the stack binds must be unique and apart from SSH (both ports while it
    moves), 80 and 443."""
    reserved = {ssh_port: "ssh", **RESERVED_PORTS}
    owner: dict[int, str] = {port: f"reserved ({name})" for port, name in reserved.items()}
    owner.update({port: f"reserved ({name})" for name, port in MONITORING_PORTS.items()})
    if ssh_next_port is not None:
        # Named by its own key: the port the operator is about to move to is the one to change.
        served = {port: f"`{key}`" for key, values in ports.items() for port in values}
        taken = owner.get(ssh_next_port) or served.get(ssh_next_port)
        if taken:
            p.add("ssh_next_port", ssh_next_port,
                  f"another SSH port: port {ssh_next_port} collides with {taken}")
        else:
            owner[ssh_next_port] = "reserved (the next SSH port, `ssh_next_port`)"
    for key, values in ports.items():
        for port in values:
            # One problem per key, at its first bad port.
            if not 1024 <= port <= 65535:
                p.add(key, port, "ports between 1024 and 65535")
                break
            if port in owner:
                p.add(key, port, f"another port: port {port} collides with {owner[port]}")
                break
            owner[port] = f"`{key}`"


def ssh_next(p: profile.Problems, data: Mapping[str, Any], ssh_port: int) -> int | None:
    """`ssh_next_port`, the first step of moving SSH: sshd listens on it, ufw and fail2ban
    take it on, beside the port pyinfra connects on. The second step is a deploy that
    connects on it (PRODSTACK_SSH_PORT): there it equals `ssh_port`, and the old port, no
    longer named, is closed. The port connected on is always kept, so no step can close
    the door the deploy came in by."""
    if data.get("ssh_next_port") is None:
        return None
    port = _int(p, data, "ssh_next_port", minimum=1, maximum=65535)
    return None if port == ssh_port or not p.ok("ssh_next_port") else port


def optional_secret(data: Mapping[str, Any], name: str, environ: Mapping[str, str]) -> str | None:
    """PRODSTACK_<NAME>, else the secrets file, else None (no strength check: URLs)."""
    from_file = read_secrets_file(secrets_path(data))
    return environ.get(f"PRODSTACK_{name}") or from_file.get(name) or None


def secret_url(data: Mapping[str, Any], name: str, environ: Mapping[str, str]) -> str | None:
    """An optional secret that is a URL, checked without ever echoing it."""
    value = optional_secret(data, name, environ)
    if value is not None and not URL_PATTERN.fullmatch(value):
        raise SettingsError([profile.Problem(name, value, "an http(s):// URL without "
            "user:password@, quotes, backslashes or white space", shown=False)])  # fmt: skip
    return value


def alerting(p: profile.Problems, data: Mapping[str, Any], shared: profile.Profile,
             environ: Mapping[str, str]) -> dict:  # fmt: skip
    """The alert_* keys, checked, and the secrets they need (`alert_email` and
    `metrics_retention_days` are shared keys, checked by `shared`)."""
    out: dict[str, Any] = {}
    email = shared.alert_email
    sender = data.get("alert_email_from") or f"prodstack@{shared.domain or 'localhost'}"
    if not EMAIL_PATTERN.match(str(sender)) and not str(sender).endswith("@localhost"):
        p.add("alert_email_from", sender, "an e-mail address")
    smarthost = data.get("alert_smarthost") or None
    if email and not smarthost:
        p.add("alert_smarthost", smarthost, "an SMTP relay host:port: alert_email needs one")
    if smarthost is not None and not re.match(r"^[A-Za-z0-9.-]+:\d{1,5}$", str(smarthost)):
        p.add("alert_smarthost", smarthost, "host:port, e.g. smtp.example.com:587")
    user = data.get("alert_smarthost_user") or None
    # Written into alertmanager.yml: no whitespace, quote or control character.
    if user is not None and not re.match(r"""^[^\s"'\\\x00-\x1f\x7f]{1,254}$""", str(user)):
        p.add("alert_smarthost_user", user, "an SMTP user name without spaces, quotes or "
              "control characters")  # fmt: skip
    secrets: dict[str, str] = {}
    # Read only from a secrets file that is itself fine (load_secrets names its problem).
    read = p.ok("secrets_file")
    if user and read:
        password = optional_secret(data, "ALERT_SMTP_PASSWORD", environ)
        if not password:
            p.add("ALERT_SMTP_PASSWORD", None, "a secret, as alert_smarthost_user is set: "
                  "from PRODSTACK_ALERT_SMTP_PASSWORD or ALERT_SMTP_PASSWORD=... in the "
                  "secrets file")  # fmt: skip
        else:
            secrets["ALERT_SMTP_PASSWORD"] = password
    for name in ("ALERT_WEBHOOK_URL", "ALERT_HEARTBEAT_URL"):
        try:
            url = secret_url(data, name, environ) if read else None
        except SettingsError as error:
            p.extend(error.problems)
            continue
        if url:
            secrets[name] = url
    grafana = data.get("grafana", False)
    if grafana not in (True, False, "true", "false", "True", "False"):
        p.add("grafana", grafana, "true or false")
    grafana = grafana in (True, "true", "True")
    if grafana and read:
        password = optional_secret(data, "GRAFANA_ADMIN_PASSWORD", environ)
        if not password or not SECRET_PATTERN.match(password):
            p.add("GRAFANA_ADMIN_PASSWORD", password, "a secret of 16+ characters, as "
                  "grafana is on: from PRODSTACK_GRAFANA_ADMIN_PASSWORD or "
                  "GRAFANA_ADMIN_PASSWORD=... in the secrets file (new_secrets.py writes one)",
                  shown=False)  # fmt: skip
        else:
            secrets["GRAFANA_ADMIN_PASSWORD"] = password
    out.update(
        alert_email=email,
        alert_email_from=str(sender),
        alert_smarthost=smarthost,
        alert_smarthost_user=user,
        grafana=grafana,
        metrics_retention_days=shared.metrics_retention_days,
        metrics_allowed_cidrs=_cidrs(p, data, "metrics_allowed_cidrs"),
        grafana_allowed_cidrs=_cidrs(p, data, "grafana_allowed_cidrs"),
    )
    return {"settings": out, "secrets": secrets}


# What each replica may open, and the budget formula: prodstack/budget.py (one for both
# targets and `prodstack choose`).
APP_DB_POOL_MAX = budget.APP_DB_POOL_MAX
APP_WEB_CONCURRENCY = budget.APP_WEB_CONCURRENCY
connection_budget = budget.vps_budget


def _sized(p: profile.Problems, data: Mapping[str, Any]) -> dict[str, Any]:
    """The size's replicas and container limits, with the host's own values over them."""
    size = data.get("size")
    if size not in SIZES:
        if p.ok("size"):  # this host's is a shared key, named by its check already
            p.add("size", size, " | ".join(SIZES))
        size = profile.DEFAULT_SIZE
    return {**SIZES[size], **{k: data[k] for k in SIZES[size] if data.get(k) is not None}}


def _replicas(p: profile.Problems, sized: Mapping[str, Any]) -> int:
    if not p.ok("replicas"):
        return 1
    return _int(p, sized, "replicas", minimum=1, maximum=32)


def settings_for(
    data: Mapping[str, Any],
    groups: frozenset[str] | set[str],
    *,
    db_data: Mapping[str, Any] | None = None,
    web_data: Sequence[Mapping[str, Any]] | None = None,
    environ: Mapping[str, str] = os.environ,
) -> Settings:
    """Validate one host's data. `db_data` is the db host's data on a split layout,
    `web_data` every web host's (the db host's connection budget counts their replicas;
    by default this host's own).

    Raises SettingsError with every problem at once, in prodstack/profile.py's format. A
    check that reads a key with a problem is skipped: it would only repeat it."""
    check_no_credentials(data)
    p = profile.Problems()
    check_known_keys(p, data)
    # The shared keys, in the cloud's words; a shared key with a problem keeps its default
    # in `shared.profile`, so the checks below read valid values.
    shared = profile.check(data, "vps", defaults=data_defaults())
    p.extend(shared.problems)
    data = shared.values
    # The keys that are rules of one field, the shared ones among them.
    vps = shared.profile
    assert isinstance(vps, profile.VpsProfile)
    roles = frozenset(g for g in groups if g in ("web", "db")) or frozenset({"web", "db"})

    size = data.get("size")
    sized = _sized(p, data)
    replicas = _replicas(p, sized)
    memory_mb = _int(p, sized, "container_memory_mb", minimum=128)
    try:
        cpus = float(sized["container_cpus"])
        if cpus <= 0:
            raise ValueError
    except (TypeError, ValueError):
        p.add("container_cpus", sized["container_cpus"], "a number > 0")
        cpus = 1.0

    domain = vps.domain
    email = data.get("letsencrypt_email") or None
    if email is not None and not EMAIL_PATTERN.match(str(email)):
        p.add("letsencrypt_email", email, "an e-mail address")
    cert, key = data.get("tls_certificate_file"), data.get("tls_key_file")
    tls = vps.tls
    if tls == "auto" and p.ok("domain", "letsencrypt_email"):
        public = domain is not None and not domain.endswith(PRIVATE_SUFFIXES)
        tls = "letsencrypt" if public and email else "provided" if cert else "selfsigned"
    if tls == "letsencrypt" and p.ok("domain", "letsencrypt_email") and not (domain and email):
        p.add("tls", tls, "letsencrypt only with both `domain` and `letsencrypt_email` set")
    if tls == "provided":
        for k, path in (("tls_certificate_file", cert), ("tls_key_file", key)):
            if not path or not Path(path).is_file():
                p.add(k, path, "a readable local PEM file (tls=provided)")

    port_base, spare_base = vps.app_port_base, vps.app_spare_port_base
    postgres_port, redis_port = vps.postgres_port, vps.redis_port
    # The port pyinfra connects on (the SSH connector's own default is 22): ufw opens it and
    # fail2ban watches it, so a non-default port never locks the operator out.
    ssh_port = _int(p, {"ssh_port": data.get("ssh_port") or 22}, "ssh_port", minimum=1,
                    maximum=65535)  # fmt: skip
    if ssh_port in RESERVED_PORTS:
        p.add("ssh_port", ssh_port, f"another SSH port: port {ssh_port} is nginx's")
    ssh_next_port = ssh_next(p, data, ssh_port) if p.ok("ssh_port") else None
    proxy_from = _trusted_proxies(p, data, "proxy_protocol_from", "a PROXY header")
    forwarded_from = _trusted_proxies(p, data, "forwarded_for_from", "X-Forwarded-For")
    if proxy_from and forwarded_from:
        p.add("forwarded_for_from", data.get("forwarded_for_from"),
              "empty while proxy_protocol_from is set: nginx takes the client's address "
              "from one of them")  # fmt: skip
    proxy_port = vps.proxy_protocol_port
    ports = {
        **({"proxy_protocol_port": [proxy_port]} if proxy_from else {}),
        "app_port_base": [port_base + i for i in range(replicas)],
        "app_spare_port_base": [spare_base + i for i in range(replicas)],
        "postgres_port": [postgres_port],
        "redis_port": [redis_port],
    }
    if p.ok("ssh_port", "ssh_next_port", "replicas", "size", *ports):
        check_ports(p, ports, ssh_port, ssh_next_port)

    try:
        subnet = ipaddress.ip_network(data.get("docker_subnet"))
        if subnet.version != 4 or subnet.num_addresses < 8:
            raise ValueError
    except (TypeError, ValueError):
        p.add("docker_subnet", data.get("docker_subnet"), "an IPv4 CIDR, /29 or larger")
        subnet = ipaddress.ip_network("172.31.255.0/29")  # stands in: never in Settings
    gateway = str(next(subnet.hosts()))

    # Where PostgreSQL and Redis listen, and who may connect. Single host: on loopback and
    # the containers' bridge gateway. Split layout: on the db host's private address, for
    # the web hosts' private addresses.
    db = db_data if db_data is not None else data
    if "web" in roles and "db" in roles:
        db_address, listen, clients = gateway, ("127.0.0.1", gateway), (str(subnet),)
    else:
        private = db.get("private_address")
        db_address = "127.0.0.1"  # stands in when `private_address` has a problem
        try:
            db_address = str(ipaddress.ip_address(private))
        except ValueError:
            p.add("private_address", private, "the db host's private IP address")
        web_cidrs = _cidrs(p, db, "db_client_cidrs")
        if "db" in roles and not web_cidrs and p.ok("db_client_cidrs"):
            p.add("db_client_cidrs", web_cidrs, "the web hosts' private addresses")
        listen, clients = ("127.0.0.1", db_address), web_cidrs

    names = REQUIRED_SECRETS
    bucket = data.get("backup_s3_bucket") or None
    if "db" in roles:
        names = names + DB_SECRETS
    if bucket and "db" in roles:
        names = names + S3_SECRETS
    s3 = validate_s3(p, data, bucket)
    secrets = load_secrets(p, data, names, environ)
    alerts = alerting(p, data, vps, environ)
    secrets.update(alerts["secrets"])

    root_login = vps.ssh_permit_root_login
    if root_login == "auto":
        # The two-step first deploy: root (keys only) while pyinfra logs in as root, `no`
        # from the first run that logs in as the deploy user (or any other sudo user).
        ssh_user = data.get("ssh_user")
        root_login = "no" if ssh_user and ssh_user != "root" else "prohibit-password"
    image = data.get("image") or environ.get("PRODSTACK_IMAGE") or None
    # Starts with a letter or digit: an image is an argument to docker, never an option.
    if image is not None:
        image = _pattern(p, "image", image, r"^[a-z0-9][a-z0-9./_:@-]{0,254}$",
                         "a Docker image reference such as prodstack-api:1a2b3c") or None
    strategy = vps.deploy_strategy
    max_connections = vps.postgres_max_connections
    if "db" in roles and p.ok("postgres_max_connections", "replicas", "size"):
        web_replicas = (
            [(replicas, strategy)]
            if web_data is None and "web" in roles
            else [
                (_replicas(p, _sized(p, d)), d.get("deploy_strategy", "rolling"))
                for d in web_data or ()
            ]
        )
        budget = connection_budget(web_replicas, max_connections)
        if not budget["ok"] and p.ok("replicas", "size"):
            p.add("postgres_max_connections", max_connections, budget["fix"])
    body = str(data.get("client_max_body_size"))
    if not re.match(r"^\d+[km]?$", body):
        p.add("client_max_body_size", body, "an nginx size such as 1m or 512k")

    # Built with stand-ins for the values that have a problem, and returned only without one.
    settings = Settings(
        roles=roles,
        size=size,
        replicas=replicas,
        container_memory_mb=memory_mb,
        container_cpus=cpus,
        domain=domain,
        server_name=domain or "_",
        tls=tls,
        letsencrypt_email=email,
        tls_certificate_file=cert,
        tls_key_file=key,
        image=image,
        image_pull=bool(data.get("image_pull", False)),
        app_port_base=port_base,
        app_spare_port_base=spare_base,
        log_level=vps.log_level,
        rate_limit_per_minute=vps.rate_limit_per_minute,
        ready_timeout_seconds=vps.ready_timeout_seconds,
        migrate_timeout_seconds=vps.migrate_timeout_seconds,
        drain_seconds=vps.drain_seconds,
        deploy_strategy=strategy,
        bake_seconds=vps.bake_seconds,
        keep_releases=vps.keep_releases,
        app_context=_app_context(p, data),
        deploy_user=vps.deploy_user,
        deploy_user_public_keys=public_keys_for(p, data),
        ssh_permit_root_login=root_login,
        ssh_port=ssh_port,
        ssh_next_port=ssh_next_port,
        ssh_user=login_name(p, data.get("ssh_user") or "root"),
        docker_subnet=str(subnet),
        docker_gateway=gateway,
        docker_bridge=vps.docker_bridge,
        postgres_db=vps.postgres_db,
        postgres_user=vps.postgres_user,
        postgres_port=postgres_port,
        postgres_version=pg_version(p, data.get("postgres_version")),
        postgres_memory_percent=vps.postgres_memory_percent,
        postgres_max_connections=max_connections,
        db_address=db_address,
        db_listen_addresses=listen,
        db_client_cidrs=clients,
        db_tls=not ("web" in roles and "db" in roles),
        pki_dir=pki_path(data),
        redis_port=redis_port,
        redis_memory_percent=vps.redis_memory_percent,
        edge_rate_limit_per_minute=vps.edge_rate_limit_per_minute,
        rate_limit_burst=vps.rate_limit_burst,
        rate_limit_exempt_cidrs=_cidrs(p, data, "rate_limit_exempt_cidrs"),
        proxy_protocol_from=proxy_from,
        proxy_protocol_port=proxy_port,
        forwarded_for_from=forwarded_from,
        client_max_body_size=body,
        **backup_tiers(p, vps),
        backup_archive_timeout_seconds=vps.backup_archive_timeout_seconds,
        backup_full_calendar=vps.backup_full_calendar,
        backup_diff_calendar=vps.backup_diff_calendar,
        backup_drill_calendar=vps.backup_drill_calendar,
        backup_offsite_drill_calendar=vps.backup_offsite_drill_calendar,
        backup_s3_uri_style=vps.backup_s3_uri_style,
        metrics_retention_disk_percent=vps.metrics_retention_disk_percent,
        backup_s3_bucket=bucket,
        **s3,
        **alerts["settings"],
        secrets=secrets,
        warnings=tuple(shared.warnings),
    )
    if p:
        raise SettingsError(p)
    return settings
