"""Shared fixtures for the VPS profile's tests: `pyinfra/` is put on sys.path as pyinfra
itself does when it runs deploy.py, so `tasks.*` imports the same modules."""

from __future__ import annotations

import os
import runpy
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.support.docker import docker_available, ensure_dockerd
from tests.vps.e2e import Stack, WebhookReceiver, build_image, free_port
from tests.vps.host import boot, destroy, ssh_keypair

REPO = Path(__file__).resolve().parents[2]
PYINFRA_DIR = REPO / "pyinfra"
if str(PYINFRA_DIR) not in sys.path:
    sys.path.append(str(PYINFRA_DIR))

SECRETS = {
    "POSTGRES_PASSWORD": "pg-password-0123456789",
    "REDIS_PASSWORD": "redis-password-0123456789",
    "API_TOKEN": "api-token-0123456789abcdef",
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
    data["deploy_user_public_keys"] = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAItest test@example"]
    return data


@pytest.fixture
def data() -> dict:
    return defaults()


@pytest.fixture
def environ() -> dict:
    return {f"PRODSTACK_{k}": v for k, v in SECRETS.items()}


# The end-to-end host, booted and deployed once per session and shared by every
# tests/vps/test_e2e*.py file (they run in file order; each leaves the host serving).


@pytest.fixture(scope="session")
def images():
    if not docker_available():
        ensure_dockerd()
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


@pytest.fixture(scope="session")
def moto(tmp_path_factory):
    """A local S3 (moto) on the Docker bridge gateway, reachable from the test host only."""
    gateway = docker_gateway()
    port = free_port(gateway)
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", gateway, "-p", str(port)],
        stdout=log.open("w"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://{gateway}:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(url + "/moto-api/", timeout=1)
            break
        except httpx.HTTPError:
            time.sleep(0.3)
    import boto3

    s3 = boto3.client(
        "s3", endpoint_url=url, region_name="us-east-1",
        aws_access_key_id="testing-access-key", aws_secret_access_key="testing-secret-key",
    )  # fmt: skip
    s3.create_bucket(Bucket="prodstack-backups")
    yield url, s3
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="session")
def stack(images, moto, alert_webhook, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("vps-e2e")
    key = ssh_keypair(workdir / "ssh")
    secrets = {
        "POSTGRES_PASSWORD": "e2e-pg-" + uuid.uuid4().hex,
        "REDIS_PASSWORD": "e2e-redis-" + uuid.uuid4().hex,
        "API_TOKEN": "e2e-token-" + uuid.uuid4().hex,
        "BACKUP_S3_ACCESS_KEY_ID": "testing-access-key",
        "BACKUP_S3_SECRET_ACCESS_KEY": "testing-secret-key",
    }
    secrets_file = workdir / "secrets.env"
    secrets_file.write_text("".join(f"{k}={v}\n" for k, v in secrets.items()))
    secrets_file.chmod(0o600)
    # PRODSTACK_E2E_NAME: a recognisable container name (e.g. on a shared machine).
    name = os.environ.get("PRODSTACK_E2E_NAME") or f"prodstack-e2e-{os.getpid()}"
    host = boot(name, key)
    data = {
        "image": images["v1"],
        "secrets_file": str(secrets_file),
        "backup_s3_bucket": "prodstack-backups",
        "backup_s3_endpoint_url": moto[0],
        # The app's own per-client limit would otherwise throttle the load loops.
        "app_rate_limit_per_minute": 1_000_000,
        "drain_seconds": 2,
        "alert_webhook_url": alert_webhook.url,
    }
    s = Stack(host, workdir, data, secrets)
    s.first = s.pyinfra()
    yield s
    if os.environ.get("PRODSTACK_KEEP_HOST"):
        print(f"kept host {name} at {host.address}")
    else:
        destroy(name)
