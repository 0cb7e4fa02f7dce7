"""Shared fixtures for the VPS profile's tests: `pyinfra/` is put on sys.path as pyinfra
itself does when it runs deploy.py, so `tasks.*` imports the same modules."""

from __future__ import annotations

import os
import runpy
import ssl
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import pytest

from tests.conftest import FRESH_HOST_GROUP, SETUP_GROUP
from tests.support.docker import checkout_build_lock, docker_available, ensure_dockerd
from tests.support.moto import moto_server
from tests.vps.e2e import Stack, WebhookReceiver, build_image, free_port
from tests.vps.host import boot, destroy, provisioned_image, ssh_keypair

REPO = Path(__file__).resolve().parents[2]
PYINFRA_DIR = REPO / "pyinfra"
if str(PYINFRA_DIR) not in sys.path:
    sys.path.append(str(PYINFRA_DIR))

SECRETS = {
    "POSTGRES_PASSWORD": "pg-password-0123456789",
    "REDIS_PASSWORD": "redis-password-0123456789",
    "API_TOKEN": "api-token-0123456789abcdef",
    "BACKUP_CIPHER_PASSPHRASE": "backup-passphrase-0123456789",
    "BACKUP_S3_ACCESS_KEY_ID": "testing-access-key",
    "BACKUP_S3_SECRET_ACCESS_KEY": "testing-secret-key",
    "GRAFANA_ADMIN_PASSWORD": "grafana-admin-0123456789",
}


def defaults() -> dict:
    """group_data/all.py as pyinfra loads it, plus an SSH key and public key."""
    data = {
        k: v
        for k, v in runpy.run_path(str(PYINFRA_DIR / "group_data" / "all.py")).items()
        if not k.startswith("__")
    }
    data["deploy_user_public_keys"] = [
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHByb2RzdGFjay10ZXN0LWtleS1ub3QtYS1rZXktMDAw"
        " test@example"
    ]
    return data


@pytest.fixture
def data() -> dict:
    return defaults()


@pytest.fixture
def environ() -> dict:
    return {f"PRODSTACK_{k}": v for k, v in SECRETS.items()}


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    """Tests marked `destroys_shared_host` lose the session's shared host: they run after
    every other collected test (a stable sort on the marker alone, so every other item
    keeps the order the collection, or another hook, gave it)."""
    items.sort(key=lambda item: item.get_closest_marker("destroys_shared_host") is not None)


# The end-to-end host, booted and deployed once per session (per xdist worker) and shared
# by the tests/vps/test_e2e*.py files of its group (they run in file order; each leaves the
# host serving). tests/conftest.py says which files share which host.


@pytest.fixture(scope="session")
def images():
    if not docker_available():
        ensure_dockerd()
    with checkout_build_lock(Path(os.environ.get("PRODSTACK_E2E_APP_REPO", REPO))):
        return {"v1": build_image("e2e-1"), "v2": build_image("e2e-2")}


def docker_gateway() -> str:
    """The docker0 bridge's address: the test hosts reach the test process there."""
    ensure_dockerd()
    return (
        subprocess.run(
            ["ip", "-4", "-o", "addr", "show", "docker0"],
            capture_output=True,
            text=True,
            check=True,
        )
        .stdout.split()[3]
        .split("/")[0]
    )


@pytest.fixture(scope="session")
def alert_webhook():
    """An Alertmanager webhook receiver on the docker0 gateway, recording what it gets."""
    receiver = WebhookReceiver(docker_gateway())
    yield receiver
    receiver.close()


class Moto(NamedTuple):
    """moto's S3 server over TLS. `url` (an IP) is for the test's boto3 client; the test
    host reaches it as `endpoint` (a name in its /etc/hosts, as pgBackRest checks the
    certificate's DNS name), trusting `ca_file`. `log` records every request."""

    url: str
    s3: Any
    ca_file: Path
    endpoint: str
    address: str
    log: Path


# One label: moto then takes the bucket from the path (as pgBackRest sends it), not the host.
S3_TEST_NAME = "prodstack-s3"


def make_test_ca(directory: Path, name: str, address: str) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for `name` and `address` signed by it."""
    ca_key, ca, key, csr, cert = (
        directory / n for n in ("ca.key", "ca.pem", "server.key", "server.csr", "server.pem")
    )
    ext = directory / "server.ext"
    ext.write_text(
        f"subjectAltName=DNS:{name},IP:{address}\nbasicConstraints=CA:FALSE\n"
        "keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
    )
    for args in (
        ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
         "/CN=prodstack test CA", "-keyout", ca_key, "-out", ca,
         "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
        ["req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", key,
         "-out", csr],
        ["x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
         "-days", "2", "-out", cert, "-extfile", ext],
    ):  # fmt: skip
        subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)
    return ca, cert, key


TLS_PROXY = """pid {dir}/nginx.pid;
error_log {dir}/error.log;
events {{}}
http {{
  access_log {dir}/access.log;
  client_body_temp_path {dir}/body;
  proxy_temp_path {dir}/proxy;
  client_max_body_size 0;
  server {{
    listen {address}:{port} ssl;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    location / {{
      proxy_pass http://127.0.0.1:{backend};
      proxy_set_header Host $host:$server_port;
      proxy_http_version 1.1;
      proxy_request_buffering off;
      # Stream responses: nginx's workers may not write temp files in the test's directory.
      proxy_buffering off;
      proxy_max_temp_file_size 0;
    }}
  }}
}}
"""


@pytest.fixture(scope="session")
def moto(tmp_path_factory):
    """A local S3 (moto) over TLS on the Docker bridge gateway, reachable from the test host
    only: pgBackRest 2.45 speaks S3 over HTTPS only, and verifies the certificate.

    nginx terminates TLS in front of moto on loopback: pgBackRest 2.45 fails its PUTs
    against moto's own TLS server ("TLS error ... unexpected eof while reading")."""
    gateway = docker_gateway()
    directory = tmp_path_factory.mktemp("moto")
    ca, cert, key = make_test_ca(directory, S3_TEST_NAME, gateway)
    port = free_port(gateway)
    log = directory / "moto.log"
    with moto_server(log) as backend_url:
        yield from _tls_proxy(directory, gateway, port, ca, cert, key, backend_url, log)


def _tls_proxy(directory, gateway, port, ca, cert, key, backend_url, log):
    backend = backend_url.rsplit(":", 1)[1]
    conf = directory / "nginx.conf"
    conf.write_text(TLS_PROXY.format(dir=directory, address=gateway, port=port, cert=cert,
                                     key=key, backend=backend))  # fmt: skip
    proxy = subprocess.Popen(
        ["nginx", "-c", str(conf), "-p", str(directory), "-g", "daemon off;"],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"https://{gateway}:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            context = ssl.create_default_context(cafile=ca)
            if httpx.get(url + "/moto-api/", timeout=1, verify=context).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    import boto3

    s3 = boto3.client(
        "s3", endpoint_url=url, region_name="us-east-1", verify=str(ca),
        aws_access_key_id="testing-access-key", aws_secret_access_key="testing-secret-key",
    )  # fmt: skip
    s3.create_bucket(Bucket="prodstack-backups")
    # The deploy refuses a bucket that would let the host's key overwrite old objects.
    s3.put_bucket_versioning(Bucket="prodstack-backups",
                             VersioningConfiguration={"Status": "Enabled"})  # fmt: skip
    yield Moto(url, s3, ca, f"https://{S3_TEST_NAME}:{port}", gateway, log)
    proxy.terminate()
    proxy.wait(timeout=10)


@pytest.fixture(scope="session")
def stack(images, moto, alert_webhook, tmp_path_factory, request):
    workdir = tmp_path_factory.mktemp("vps-e2e")
    key = ssh_keypair(workdir / "ssh")
    secrets = {
        "POSTGRES_PASSWORD": "e2e-pg-" + uuid.uuid4().hex,
        "REDIS_PASSWORD": "e2e-redis-" + uuid.uuid4().hex,
        "API_TOKEN": "e2e-token-" + uuid.uuid4().hex,
        "BACKUP_S3_ACCESS_KEY_ID": "testing-access-key",
        "BACKUP_S3_SECRET_ACCESS_KEY": "testing-secret-key",
        "BACKUP_CIPHER_PASSPHRASE": "e2e-backup-" + uuid.uuid4().hex,
        # The receiver's URL is a secret, as a Slack webhook's would be (never data).
        "ALERT_WEBHOOK_URL": alert_webhook.url,
    }
    secrets_file = workdir / "secrets.env"
    secrets_file.write_text("".join(f"{k}={v}\n" for k, v in secrets.items()))
    secrets_file.chmod(0o600)
    # PRODSTACK_E2E_NAME: a recognisable container name (e.g. on a shared machine).
    name = os.environ.get("PRODSTACK_E2E_NAME") or f"prodstack-e2e-{os.getpid()}"
    # One shared host per xdist worker (tests/conftest.py splits the files over two).
    name += f"-{os.environ['PYTEST_XDIST_WORKER']}" if "PYTEST_XDIST_WORKER" in os.environ else ""
    fresh = request.config.stash.get(SETUP_GROUP, FRESH_HOST_GROUP) == FRESH_HOST_GROUP
    host = boot(name, key, image=None if fresh else provisioned_image("single"))
    host.run(f"echo '{moto.address} {S3_TEST_NAME}' >> /etc/hosts")
    data = {
        "image": images["v1"],
        "secrets_file": str(secrets_file),
        "backup_s3_bucket": "prodstack-backups",
        "backup_s3_endpoint_url": moto.endpoint,
        "backup_s3_uri_style": "path",
        "backup_s3_ca_file": str(moto.ca_file),
        # The app's own per-client limit would otherwise throttle the load loops.
        "rate_limit_per_minute": 1_000_000,
        "drain_seconds": 2,
        # This machine is the PROXY-protocol balancer of test_e2e.py's test of it.
        "proxy_protocol_from": f"{docker_gateway()}/32",
    }
    s = Stack(host, workdir, data, secrets)
    s.first = s.pyinfra()
    yield s
    if os.environ.get("PRODSTACK_KEEP_HOST"):
        print(f"kept host {name} at {host.address}")
    else:
        destroy(name)
