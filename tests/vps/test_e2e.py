"""End to end: a fresh systemd host, the real pyinfra deploy over SSH, checks from outside.

The host is a Debian 12 rootfs run as a Docker container with systemd as PID 1
(tests/vps/host.py), booted and deployed once per session by conftest.py's `stack`
fixture and shared with the other test_e2e*.py files. Tests run in file order: first deploy, then
reachability, TLS, the API, idempotency, invalid data, a rolling deploy under load, a
failed deploy, rollback, a killed replica and the monitoring timer (backups and
restores: test_e2e_pitr.py).

Load goes only to the test host: a bounded loop runs *inside* it against nginx on its
loopback (exempt from the per-IP rate limit, as the host's own health checks are).
"""

from __future__ import annotations

import concurrent.futures
import json
import socket
import ssl
import subprocess
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.vps.e2e import Load, free_port, grand_total, prometheus

REPO = Path(__file__).resolve().parents[2]
PYINFRA_DIR = REPO / "pyinfra"

pytestmark = [pytest.mark.docker, pytest.mark.e2e, pytest.mark.timeout(1500)]


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
    # This machine plays the PROXY-protocol balancer (proxy_protocol_from): its port too.
    assert open_ports == {22, 80, 443, stack.proxy_protocol_port}


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


def test_behind_a_proxy_protocol_balancer_the_app_logs_the_clients_address(stack, tmp_path):
    """HAProxy on this machine plays a provider's TCP balancer, sending the PROXY protocol
    (v2) to proxy_protocol_port: TLS is served through it, and the app's log line for the
    request names the client HAProxy saw (loopback), not the balancer (docker0's address)."""
    port = free_port("127.0.0.1")
    config = tmp_path / "haproxy.cfg"
    config.write_text(
        "defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 30s\n"
        "  timeout server 30s\nfrontend balancer\n  bind 127.0.0.1:" + str(port) + "\n"
        "  default_backend web\nbackend web\n"
        f"  server web1 {stack.host.address}:{stack.proxy_protocol_port} send-proxy-v2\n"
    )
    haproxy = subprocess.Popen(["haproxy", "-db", "-f", str(config)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)  # fmt: skip
    request_id = uuid.uuid4().hex
    try:
        deadline = time.monotonic() + 10
        while not _reachable("127.0.0.1", port) and time.monotonic() < deadline:
            assert haproxy.poll() is None, haproxy.stderr.read()
            time.sleep(0.2)
        with httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=False, timeout=10,
                          headers={"X-Request-ID": request_id}) as c:  # fmt: skip
            response = c.get("/api/v1/alerts", params={"limit": 1})
    finally:
        haproxy.terminate()
        haproxy.wait(timeout=10)
    assert response.status_code == 200, response.text
    logs = stack.host.run("for c in $(docker ps -q); do docker logs --since 10m $c 2>&1; done")
    (line,) = [line for line in logs.stdout.splitlines() if request_id in line]
    assert json.loads(line)["client"] == "127.0.0.1", line


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
    # CONFIG is an admin command, which no Redis user has (test_e2e_hardening.py checks the
    # users); what the running server was started with is in its redis.conf.
    app = (f"REDISCLI_AUTH={stack.secrets['REDIS_PASSWORD']} redis-cli -h 172.30.232.1 "
           "--user prodstack --no-auth-warning")  # fmt: skip
    assert stack.host.run(f"{app} ping").stdout.strip() == "PONG"
    conf = stack.host.run("cat /etc/redis/redis.conf").stdout.splitlines()
    for line in ("appendonly yes", "appendfsync everysec", "maxmemory-policy allkeys-lru"):
        assert line in conf
    wrong = stack.host.run(
        "PGPASSWORD=wrong psql -h 127.0.0.1 -U prodstack_a -d prodstack -c 'select 1'", check=False
    )
    assert "password authentication failed" in wrong.stderr
    assert stack.psql("show password_encryption") == "scram-sha-256"
    assert stack.host.run("stat -c %a /etc/prodstack/app.env").stdout.strip() == "600"


def test_diff_never_prints_a_secret(stack):
    """`pyinfra --diff` would print the app's environment file whole when it changes; the
    deploy turns it off, says so, and puts the file back."""
    stack.host.run("echo '# drift' >> /etc/prodstack/app.env")
    result = stack.pyinfra(options=("--diff",))
    assert result.returncode == 0, result.stdout[-3000:]
    assert "--diff is off for this run" in result.stdout
    for name, value in stack.secrets.items():
        assert value not in result.stdout, f"{name} printed"
    assert "# drift" not in stack.host.run("cat /etc/prodstack/app.env").stdout


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
    # Every key's problem reads as the cloud's (`key: value is invalid; ...`).
    assert f"{key}: {override[key]!r} is invalid" in result.stdout, result.stdout[-2000:]
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
    status = json.loads(stack.host.run("prodstack-release status --json").stdout)
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
    status = json.loads(stack.host.run("prodstack-release status --json").stdout)
    assert status["current"] == images["v2"]
    assert {r["image"] for r in status["replicas"]} == {images["v2"]}


def test_rollback_returns_to_the_previous_image(stack, images):
    result = stack.pyinfra("rollback.py")
    assert result.returncode == 0, result.stdout[-3000:]
    assert stack.version() == "e2e-1"
    status = json.loads(stack.host.run("prodstack-release status --json").stdout)
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


def _wait_scraped_up(stack, metric: str, timeout: float = 90) -> None:
    """Until Prometheus's last scrape says `metric` is 1 again: the host is shared, and the
    files after this one read status from Prometheus, not from the service."""
    deadline = time.monotonic() + timeout
    while True:
        result = prometheus(stack, "/api/v1/query", query=metric)["result"]
        if result and float(result[0]["value"][1]) == 1:
            return
        assert time.monotonic() < deadline, f"{metric} not 1 after {timeout:.0f} s: {result}"
        time.sleep(3)


def test_health_check_timer_reports_to_the_journal(stack):
    assert "prodstack-healthcheck.timer" in stack.host.run("systemctl list-timers --all").stdout
    stack.host.run("systemctl start prodstack-healthcheck.service")
    stack.host.run("systemctl stop redis-server")
    try:
        failed = stack.host.run("systemctl start prodstack-healthcheck.service", check=False)
        assert failed.returncode != 0
    finally:
        stack.host.run("systemctl start redis-server")
        _wait_scraped_up(stack, "redis_up")
    journal = stack.host.run("journalctl -u prodstack-healthcheck --no-pager -o cat").stdout
    assert "ok: api /health through nginx" in journal
    assert "ok: postgresql" in journal
    assert "FAIL: redis ping" in journal
