"""End to end: a fresh systemd host, the real pyinfra deploy over SSH, checks from outside.

The host is a Debian 12 rootfs run as a Docker container with systemd as PID 1
(tests/vps/host.py). Tests run in file order and share one host: first deploy, then
reachability, TLS, the API, idempotency, invalid data, a rolling deploy under load, a
failed deploy, rollback, a killed replica, backup and restore (with S3 on a local moto
server) and the monitoring timer.

Load goes only to the test host: a bounded loop runs *inside* it against nginx on its
loopback (exempt from the per-IP rate limit, as the host's own health checks are).
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import socket
import ssl
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.support.docker import docker_available, ensure_dockerd, python_base_image
from tests.vps.host import Host, boot, destroy, ssh_keypair

REPO = Path(__file__).resolve().parents[2]
PYINFRA_DIR = REPO / "pyinfra"

pytestmark = [pytest.mark.docker, pytest.mark.e2e, pytest.mark.timeout(1500)]

# A bounded load loop, run with the host's python3: N threads each open a fresh TLS
# connection per request to nginx on loopback, until the stop file appears, the request
# budget is spent or the time limit passes. Prints a JSON summary.
LOAD_LOOP = r"""
import http.client, json, os, ssl, sys, threading, time
seconds, budget, stop_file, token = float(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
deadline = time.monotonic() + seconds
ctx = ssl._create_unverified_context()
lock = threading.Lock()
out = {"ok": 0, "failed": 0, "errors": [], "versions": {}}
sent = 0
def worker(n):
    global sent
    while True:
        with lock:
            if sent >= budget or time.monotonic() > deadline or os.path.exists(stop_file):
                return
            sent += 1
            i = sent
        path = "/health" if i % 2 else "/api/v1/alerts?limit=5"
        try:
            conn = http.client.HTTPSConnection("127.0.0.1", 443, context=ctx, timeout=10)
            conn.request("GET", path, headers={"Authorization": "Bearer " + token})
            r = conn.getresponse()
            body = r.read()
            conn.close()
            with lock:
                if r.status == 200:
                    out["ok"] += 1
                    if path == "/health":
                        v = json.loads(body).get("version")
                        out["versions"][v] = out["versions"].get(v, 0) + 1
                else:
                    out["failed"] += 1
                    out["errors"].append(f"{path}: HTTP {r.status} {body[:120]!r}")
        except Exception as e:
            with lock:
                out["failed"] += 1
                out["errors"].append(f"{path}: {e!r}")
threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
[t.start() for t in threads]
[t.join() for t in threads]
out["errors"] = out["errors"][:20]
print(json.dumps(out))
"""


class Load:
    """A bounded load loop inside the host, stopped by a file or its own limits."""

    def __init__(self, host: Host, token: str, seconds: int = 240, budget: int = 200_000):
        self.host = host
        self.stop_file = f"/tmp/load-stop-{uuid.uuid4().hex}"
        self.proc = subprocess.Popen(
            ["docker", "exec", "-i", host.name, "python3", "-", str(seconds), str(budget),
             self.stop_file, token],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.proc.stdin.write(LOAD_LOOP)
        self.proc.stdin.close()

    def stop(self) -> dict:
        self.host.run(f"touch {self.stop_file}")
        out = self.proc.stdout.read()
        self.proc.wait(timeout=60)
        assert self.proc.returncode == 0, self.proc.stderr.read()
        return json.loads(out)


def build_image(version: str) -> str:
    # PRODSTACK_E2E_APP_REPO: build the app from another checkout (e.g. a clean export).
    source = Path(os.environ.get("PRODSTACK_E2E_APP_REPO", REPO))
    result = subprocess.run(
        [str(source / "scripts" / "build-image.sh"), python_base_image()],
        env={**os.environ, "APP_VERSION": version},
        capture_output=True,
        text=True,
        cwd=source,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def free_port(address: str) -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return s.getsockname()[1]


class Stack:
    def __init__(self, host: Host, workdir: Path, data: dict[str, str], secrets: dict[str, str]):
        self.host = host
        self.workdir = workdir
        self.data = data
        self.secrets = secrets
        self.base = f"https://{host.address}"

    def pyinfra(self, deploy: str = "deploy.py", **data) -> subprocess.CompletedProcess:
        args = [sys.executable, "-m", "pyinfra", "-y", "inventory.py", deploy]
        for key, value in {**self.data, **data}.items():
            args += ["--data", f"{key}={value}"]
        env = {
            **os.environ,
            "PRODSTACK_HOST": self.host.address,
            "PRODSTACK_SSH_KEY": str(self.host.key),
            "PRODSTACK_SSH_KNOWN_HOSTS": "/dev/null",
        }
        started = time.monotonic()
        # pyinfra prints its progress and results to stderr: keep both in stdout.
        result = subprocess.run(
            args, cwd=PYINFRA_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, timeout=900,
        )  # fmt: skip
        log = self.workdir / f"pyinfra-{deploy}-{int(started)}.log"
        log.write_text(result.stdout)
        print(f"pyinfra {deploy}: rc={result.returncode} in {time.monotonic() - started:.0f}s "
              f"(log: {log})")  # fmt: skip
        return result

    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.base,
            verify=False,
            timeout=10,
            headers={"Authorization": f"Bearer {self.secrets['API_TOKEN']}"},
        )

    def version(self) -> str:
        with self.client() as c:
            return c.get("/health").json()["version"]

    def psql(self, sql: str) -> str:
        return self.host.run(
            f"runuser -u postgres -- psql -XAt -d prodstack -c {json.dumps(sql)}"
        ).stdout.strip()


def grand_total(output: str) -> tuple[int, str, str]:
    """(operations, changed, errors) from pyinfra's results table."""
    match = re.search(r"Grand total\s+(\d+)\s+(\S+)\s+(\S+)\s+(\S+)", output)
    assert match, output[-3000:]
    return int(match.group(1)), match.group(2), match.group(3)


@pytest.fixture(scope="module")
def images():
    if not docker_available():
        ensure_dockerd()
    return {"v1": build_image("e2e-1"), "v2": build_image("e2e-2")}


@pytest.fixture(scope="module")
def moto(tmp_path_factory):
    """A local S3 (moto) on the Docker bridge gateway, reachable from the test host only."""
    ensure_dockerd()
    gateway = (
        subprocess.run(
            ["ip", "-4", "-o", "addr", "show", "docker0"],
            capture_output=True,
            text=True,
            check=True,
        )
        .stdout.split()[3]
        .split("/")[0]
    )
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


@pytest.fixture(scope="module")
def stack(images, moto, tmp_path_factory):
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
    name = f"prodstack-e2e-{os.getpid()}"
    host = boot(name, key)
    data = {
        "image": images["v1"],
        "secrets_file": str(secrets_file),
        "backup_s3_bucket": "prodstack-backups",
        "backup_s3_endpoint_url": moto[0],
        # The app's own per-client limit would otherwise throttle the load loops.
        "app_rate_limit_per_minute": 1_000_000,
        "drain_seconds": 2,
    }
    s = Stack(host, workdir, data, secrets)
    s.first = s.pyinfra()
    yield s
    if os.environ.get("PRODSTACK_KEEP_HOST"):
        print(f"kept host {name} at {host.address}")
    else:
        destroy(name)


def test_first_deploy_succeeds(stack):
    assert stack.first.returncode == 0, stack.first.stdout[-5000:]
    _, changed, errors = grand_total(stack.first.stdout)
    assert errors == "-"
    assert stack.version() == "e2e-1"


def _reachable(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=1.5):
            return True
    except OSError:
        return False


def test_only_ssh_http_https_are_reachable(stack):
    listening = set()
    for line in stack.host.run("ss -Htln").stdout.splitlines():
        listening.add(int(line.split()[3].rsplit(":", 1)[1]))
    # Everything listening on the host, plus the ports that must never be open.
    candidates = listening | {5432, 6379, 8001, 8002, 8003, 8101, 8102, 8103, 2375, 2376}
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        ports = sorted(candidates)
        reachable = pool.map(lambda p: _reachable(stack.host.address, p), ports)
        open_ports = {port for port, ok in zip(ports, reachable, strict=True) if ok}
    assert {5432, 6379, 8001} <= listening  # they do run, on private addresses only
    assert open_ports == {22, 80, 443}


def test_http_redirects_to_https(stack):
    r = httpx.get(f"http://{stack.host.address}/api/v1/alerts?x=1", follow_redirects=False)
    assert r.status_code == 301
    assert r.headers["location"] == f"https://{stack.host.address}/api/v1/alerts?x=1"


def _handshake(address: str, version: ssl.TLSVersion) -> str:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_ciphers("ALL:@SECLEVEL=0")  # let the client offer old protocols at all
    ctx.minimum_version = version
    ctx.maximum_version = version
    with socket.create_connection((address, 443), timeout=5) as raw, ctx.wrap_socket(raw) as tls:
        return tls.version()


def test_tls_12_and_13_only(stack):
    assert _handshake(stack.host.address, ssl.TLSVersion.TLSv1_2) == "TLSv1.2"
    assert _handshake(stack.host.address, ssl.TLSVersion.TLSv1_3) == "TLSv1.3"
    for old in (ssl.TLSVersion.TLSv1_1, ssl.TLSVersion.TLSv1):
        with pytest.raises(ssl.SSLError):
            _handshake(stack.host.address, old)


def test_security_headers_and_no_version_leak(stack):
    with stack.client() as c:
        r = c.get("/health/live")
    assert r.status_code == 200
    assert r.headers["server"] == "nginx"
    assert r.headers["strict-transport-security"].startswith("max-age=")


def test_create_then_list_an_alert_through_nginx(stack):
    message = f"e2e {uuid.uuid4()}"
    with stack.client() as c:
        created = c.post(
            "/api/v1/alerts",
            json={"message": message, "type": "test", "priority": "high", "region": "eu"},
        )
        assert created.status_code == 201, created.text
        alert_id = created.json()["id"]
        assert c.get(f"/api/v1/alerts/{alert_id}").json()["message"] == message
        listed = c.get("/api/v1/alerts", params={"limit": 100}).json()
        assert "pagination" in listed
        assert alert_id in [a["id"] for a in listed["data"]]
        assert c.post("/api/v1/alerts", json={}, headers={"Authorization": ""}).status_code in (
            401,
            403,
        )


def test_rate_limit_answers_429_from_outside(stack):
    with (
        httpx.Client(base_url=stack.base, verify=False, timeout=10) as c,
        concurrent.futures.ThreadPoolExecutor(16) as pool,
    ):
        codes = list(pool.map(lambda _: c.get("/api/v1/alerts").status_code, range(60)))
    assert 429 in codes
    assert codes.count(200) >= 10  # burst 20 at 10 r/s


def test_databases_private_and_redis_needs_auth(stack):
    for port in (5432, 6379):
        assert not _reachable(stack.host.address, port)
    for address in ("127.0.0.1", "172.30.232.1"):
        noauth = stack.host.run(f"redis-cli -h {address} ping", check=False)
        assert "NOAUTH" in noauth.stdout + noauth.stderr
    words = stack.host.run(
        "REDISCLI_AUTH=$(grep -oP '^requirepass \"\\K[^\"]+' /etc/redis/redis.conf) "
        "redis-cli --no-auth-warning config get appendonly appendfsync maxmemory-policy"
    ).stdout.split()
    assert dict(zip(words[::2], words[1::2], strict=True)) == {
        "appendonly": "yes",
        "appendfsync": "everysec",
        "maxmemory-policy": "allkeys-lru",
    }
    wrong = stack.host.run(
        "PGPASSWORD=wrong psql -h 127.0.0.1 -U prodstack -d prodstack -c 'select 1'", check=False
    )
    assert "password authentication failed" in wrong.stderr
    assert stack.psql("show password_encryption") == "scram-sha-256"
    assert stack.host.run("stat -c %a /etc/prodstack/app.env").stdout.strip() == "600"


def test_second_run_changes_nothing(stack):
    result = stack.pyinfra()
    assert result.returncode == 0, result.stdout[-3000:]
    operations, changed, errors = grand_total(result.stdout)
    assert operations > 50
    assert (changed, errors) == ("-", "-"), result.stdout[-6000:]


@pytest.mark.parametrize(
    ("override", "key"),
    [({"replicas": 0}, "replicas"), ({"domain": "bad_domain"}, "domain"),
     ({"app_spare_port_base": 8002}, "app_spare_port_base")],
)  # fmt: skip
def test_invalid_data_fails_before_any_change(stack, override, key):
    snapshot = "find /etc/prodstack -type f -exec md5sum {} + | sort && docker ps -q | sort"
    before = stack.host.run(snapshot).stdout
    result = stack.pyinfra(**override)
    assert result.returncode != 0
    assert f"`{key}`" in result.stdout
    assert stack.host.run(snapshot).stdout == before


def test_rolling_deploy_under_load_has_no_failed_requests(stack, images):
    load = Load(stack.host, stack.secrets["API_TOKEN"])
    time.sleep(2)
    result = stack.pyinfra(image=images["v2"])
    time.sleep(2)
    summary = load.stop()
    assert result.returncode == 0, result.stdout[-5000:]
    print("load during rolling deploy:", summary)
    assert summary["failed"] == 0, summary["errors"]
    assert summary["ok"] > 100
    assert {"e2e-1", "e2e-2"} <= set(summary["versions"])  # old served, then new
    assert stack.version() == "e2e-2"
    status = json.loads(stack.host.run("prodstack-release status").stdout)
    assert status["current"] == images["v2"] and status["previous"] == images["v1"]
    assert len(status["replicas"]) == 3
    # The previous image is kept on the host for rollback.
    stack.host.run(f"docker image inspect {images['v1']} >/dev/null")


def test_failed_health_check_aborts_and_old_version_keeps_serving(stack, images):
    # An image that migrates fine but whose server exits at once.
    dockerfile = (
        f"FROM {images['v2']}\n"
        'ENTRYPOINT ["sh", "-c", "[ \\"$1\\" = migrate ] && exec python3 -m app migrate; '
        'exit 3", "--"]\n'
    )
    stack.host.run("docker build -q -t prodstack-api:broken -", input=dockerfile, timeout=120)
    load = Load(stack.host, stack.secrets["API_TOKEN"])
    result = stack.pyinfra(image="prodstack-api:broken")
    summary = load.stop()
    assert result.returncode != 0
    assert "not ready" in result.stdout
    assert summary["failed"] == 0, summary["errors"]
    assert set(summary["versions"]) == {"e2e-2"}
    status = json.loads(stack.host.run("prodstack-release status").stdout)
    assert status["current"] == images["v2"]
    assert {r["image"] for r in status["replicas"]} == {images["v2"]}


def test_rollback_returns_to_the_previous_image(stack, images):
    result = stack.pyinfra("rollback.py")
    assert result.returncode == 0, result.stdout[-3000:]
    assert stack.version() == "e2e-1"
    status = json.loads(stack.host.run("prodstack-release status").stdout)
    assert status["current"] == images["v1"] and status["previous"] == images["v2"]


def test_killing_a_replica_fails_no_requests(stack):
    victim = stack.host.run(
        "docker ps --filter label=prodstack.replica=2 --format '{{.Names}}'"
    ).stdout.strip()
    assert victim
    load = Load(stack.host, stack.secrets["API_TOKEN"])
    time.sleep(2)
    # SIGKILL the replica's process, as a crash or the OOM killer would. (`docker kill`
    # counts as a manual stop, which Docker's restart policy deliberately respects.)
    stack.host.run(f"kill -9 $(docker inspect -f '{{{{.State.Pid}}}}' {victim})")
    time.sleep(8)
    summary = load.stop()
    print("load while killing a replica:", summary)
    assert summary["failed"] == 0, summary["errors"]
    assert summary["ok"] > 50
    # The restart policy brings it back.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        state = stack.host.run(f"docker inspect -f '{{{{.State.Running}}}}' {victim}").stdout
        if state.strip() == "true":
            break
        time.sleep(1)
    assert state.strip() == "true"


def test_backup_then_restore_brings_back_deleted_data(stack, moto):
    with stack.client() as c:
        created = c.post(
            "/api/v1/alerts",
            json={"message": "keep me", "type": "test", "priority": "low", "region": "eu"},
        )
        assert created.status_code == 201
        alert_id = created.json()["id"]

    stack.host.run("systemctl start prodstack-backup.service", timeout=120)
    dumps = stack.host.run("ls /var/backups/prodstack/daily/ /var/backups/prodstack/weekly/ "
                           "/var/backups/prodstack/monthly/").stdout  # fmt: skip
    assert dumps.count(".dump") == 3
    stack.host.run("pg_restore --list /var/backups/prodstack/daily/*.dump >/dev/null")
    keys = [o["Key"] for o in moto[1].list_objects_v2(Bucket="prodstack-backups")["Contents"]]
    assert any(k.startswith("prodstack/daily/") for k in keys)
    assert any(k.startswith("prodstack/monthly/") for k in keys)
    assert "02:00:00" in stack.host.run("systemctl cat prodstack-backup.timer").stdout

    table = stack.psql(
        "select table_name from information_schema.tables where table_schema = 'public' "
        "and table_name like '%alert%' order by length(table_name) limit 1"
    )
    stack.psql(f"delete from {table}")
    with stack.client() as c:
        assert c.get(f"/api/v1/alerts/{alert_id}").status_code == 404

    # Restore from the off-site copy: the path a rebuilt host takes in the DR runbook.
    stack.host.run("prodstack-restore s3:latest", timeout=300)
    with stack.client() as c:
        restored = c.get(f"/api/v1/alerts/{alert_id}")
        assert restored.status_code == 200
        assert restored.json()["message"] == "keep me"


def test_health_check_timer_reports_to_the_journal(stack):
    assert "prodstack-healthcheck.timer" in stack.host.run("systemctl list-timers --all").stdout
    stack.host.run("systemctl start prodstack-healthcheck.service")
    stack.host.run("systemctl stop redis-server")
    try:
        failed = stack.host.run("systemctl start prodstack-healthcheck.service", check=False)
        assert failed.returncode != 0
    finally:
        stack.host.run("systemctl start redis-server")
    journal = stack.host.run("journalctl -u prodstack-healthcheck --no-pager -o cat").stdout
    assert "ok: api /health through nginx" in journal
    assert "ok: postgresql" in journal
    assert "FAIL: redis ping" in journal
