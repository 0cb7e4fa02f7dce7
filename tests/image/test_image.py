"""The API image built with a real Docker engine, run against the real databases."""

from __future__ import annotations

import hashlib
import json
import subprocess
import time

import httpx
import pytest

from prodstack.local_services import free_port
from stacks import rds_ca
from stacks.program import PROXY_CA_BUNDLE, PROXY_CA_ROOTS
from tests.support.app_server import TEST_TOKEN, app_env, run_app
from tests.support.docker import python_base_image

APP_LAYERS_BUDGET_BYTES = 40 * 1024 * 1024


def inspect(ref: str) -> dict:
    out = subprocess.run(["docker", "inspect", ref], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)[0]


@pytest.fixture(scope="module")
def container(app_image, pg, redis_server):
    assert run_app("migrate", app_env(pg.url, redis_server.url)).returncode == 0
    port = free_port()
    # Host networking reaches the loopback databases; --read-only and a /tmp tmpfs are how
    # ECS runs it (readonlyRootFilesystem).
    name = f"prodstack-image-test-{port}"
    subprocess.run(
        ["docker", "run", "-d", "--name", name, "--network", "host", "--read-only",
         "--tmpfs", "/tmp", "-e", f"PORT={port}", "-e", f"DATABASE_URL={pg.url}",
         "-e", f"REDIS_URL={redis_server.url}", "-e", f"API_TOKEN={TEST_TOKEN}", app_image],
        check=True, capture_output=True,
    )
    yield name, f"http://127.0.0.1:{port}"
    subprocess.run(["docker", "rm", "-f", name], capture_output=True)


def wait_ready(url: str, timeout: float = 30) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        try:
            resp = httpx.get(url + "/health/ready", timeout=2)
            if resp.status_code == 200 or time.monotonic() > deadline:
                return resp
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.2)


def test_ready_against_real_databases(container):
    name, url = container
    resp = wait_ready(url)
    assert resp.status_code == 200, resp.text
    assert resp.json()["checks"]["postgres"]["status"] == "up"
    created = httpx.post(
        url + "/api/v1/alerts", headers={"Authorization": f"Bearer {TEST_TOKEN}"},
        json={"message": "from the image", "type": "test", "priority": "low", "region": "lab"},
    )
    assert created.status_code == 201


def test_runs_as_non_root(container, app_image):
    name, _ = container
    assert inspect(app_image)["Config"]["User"] == "10001:10001"
    uid = subprocess.run(["docker", "exec", name, "id", "-u"], check=True, capture_output=True,
                         text=True).stdout.strip()
    assert uid == "10001"
    # The serving process itself, not just `docker exec`.
    status = subprocess.run(["docker", "exec", name, "cat", "/proc/1/status"], check=True,
                            capture_output=True, text=True).stdout
    assert "Uid:\t10001" in status


def test_healthcheck_reports_healthy(container, app_image):
    name, url = container
    config = inspect(app_image)["Config"]
    assert config["Healthcheck"]["Test"][:1] == ["CMD"]
    assert config["Entrypoint"] == ["python3", "-m", "app"] and config["Cmd"] == ["serve"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        state = inspect(name)["State"]["Health"]["Status"]
        if state == "healthy":
            break
        time.sleep(1)
    assert state == "healthy"


def test_final_stage_has_no_toolchain(app_image):
    probe = subprocess.run(
        ["docker", "run", "--rm", "--entrypoint", "sh", app_image, "-c",
         "command -v gcc || command -v cc || command -v strip || command -v pip || echo none"],
        check=True, capture_output=True, text=True,
    )
    assert probe.stdout.strip() == "none"


def test_app_layers_stay_within_budget(app_image):
    extra = inspect(app_image)["Size"] - inspect(python_base_image())["Size"]
    assert 0 < extra < APP_LAYERS_BUDGET_BYTES, f"app layers are {extra / 1e6:.1f} MB"


def test_image_signs_rds_iam_tokens_with_its_pruned_botocore(app_image):
    """The Dockerfile keeps only botocore's rds model; the app's token signer still works
    (static credentials stand in for the task role's)."""
    script = (
        "import asyncio\n"
        "import botocore.session\n"
        "from app.core.config import IamAuth\n"
        "from app.db_iam import IamTokenPassword\n"
        "s = botocore.session.get_session()\n"
        "s.set_credentials('AKIDEXAMPLE', 'example-secret')\n"
        "c = s.create_client('rds', region_name='eu-west-1')\n"
        "auth = IamAuth('db.internal', 5432, 'prodstack_app', 'eu-west-1')\n"
        "print(asyncio.run(IamTokenPassword(auth, client=c)()))\n"
    )
    out = subprocess.run(
        ["docker", "run", "--rm", "--entrypoint", "python3", app_image, "-c", script],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("db.internal:5432/?Action=connect&DBUser=prodstack_app&")
    assert "X-Amz-Signature=" in out.stdout


def test_image_ships_the_rds_ca_bundle_the_stack_names(app_image):
    """The cloud tasks verify RDS with DB_SSLROOTCERT=stacks.rds_ca.BUNDLE_IN_IMAGE: the
    image holds the committed bundle there, and its OpenSSL loads every certificate."""
    script = (
        "import hashlib, ssl, sys\n"
        "path = sys.argv[1]\n"
        "ctx = ssl.create_default_context(cafile=path)\n"
        "print(len(ctx.get_ca_certs()), hashlib.sha256(open(path, 'rb').read()).hexdigest())\n"
    )
    out = subprocess.run(
        ["docker", "run", "--rm", "--entrypoint", "python3", app_image, "-c", script,
         rds_ca.BUNDLE_IN_IMAGE],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    committed = rds_ca.BUNDLE.read_bytes()
    count, digest = out.stdout.split()
    assert int(count) == committed.count(b"BEGIN CERTIFICATE")
    assert digest == hashlib.sha256(committed).hexdigest()


def test_image_holds_the_roots_the_proxy_path_trusts(app_image):
    """Behind RDS Proxy the API verifies with DB_SSLROOTCERT=stacks.program.PROXY_CA_BUNDLE:
    the image has that file, and it holds the Amazon Trust Services roots."""
    script = (
        "import ssl, sys\n"
        "ctx = ssl.create_default_context(cafile=sys.argv[1])\n"
        "print('\\n'.join(v for c in ctx.get_ca_certs() for rdn in c['subject']\n"
        "                for k, v in rdn if k == 'commonName'))\n"
    )
    out = subprocess.run(
        ["docker", "run", "--rm", "--entrypoint", "python3", app_image, "-c", script,
         PROXY_CA_BUNDLE],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert set(PROXY_CA_ROOTS) <= set(out.stdout.splitlines())


def test_missing_config_exits_with_one_line(app_image):
    out = subprocess.run(
        ["docker", "run", "--rm", "-e", "REDIS_URL=redis://127.0.0.1:1/0", "-e",
         f"API_TOKEN={TEST_TOKEN}", app_image],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "config error: DATABASE_URL is required (or DB_HOST, DB_USER and DB_PASSWORD)"
    ]
