"""End to end, several hosts: `web` and `db` on separate systemd test hosts joined by a
private network, deployed by one pyinfra run; then a second web host, and a rolling
deploy that goes one web host at a time.

Three hosts boot in parallel at the start (tests/vps/host.py), each on the default Docker
bridge (the public side) and on a private network this file creates (10.77.0.0/24, or
PRODSTACK_E2E_SUBNET). The two-host layout is deployed first; the second web host joins
for the three-host case.
Checks are made from outside the hosts: from this machine over the public side, from the
web hosts over the private one, and from inside an API container with the app's own
drivers. Load goes only to the test hosts: a bounded loop on the db host alternates
between the two web hosts' nginx, as a load balancer or round-robin DNS would.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import socket
import subprocess
import time
import uuid

import httpx
import pytest

from tests.vps.e2e import Cluster, Load, grand_total
from tests.vps.host import boot, provisioned_image, ssh_keypair

pytestmark = [pytest.mark.docker, pytest.mark.e2e, pytest.mark.timeout(1800)]

# PRODSTACK_E2E_SUBNET: another /24 when someone else's run holds this one (a shared
# Docker engine refuses overlapping networks).
SUBNET = os.environ.get("PRODSTACK_E2E_SUBNET", "10.77.0.0/24")
_PREFIX = SUBNET.rsplit(".", 1)[0]
WEB1, WEB2, DB = f"{_PREFIX}.10", f"{_PREFIX}.11", f"{_PREFIX}.20"


@pytest.fixture(scope="module")
def cluster(images, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("vps-multihost")
    key = ssh_keypair(workdir / "ssh")
    secrets = {
        "POSTGRES_PASSWORD": "mh-pg-" + uuid.uuid4().hex,
        "REDIS_PASSWORD": "mh-redis-" + uuid.uuid4().hex,
        "API_TOKEN": "mh-token-" + uuid.uuid4().hex,
        "BACKUP_CIPHER_PASSPHRASE": "mh-backup-" + uuid.uuid4().hex,
    }
    secrets_file = workdir / "secrets.env"
    secrets_file.write_text("".join(f"{k}={v}\n" for k, v in secrets.items()))
    secrets_file.chmod(0o600)
    # PRODSTACK_E2E_NAME: a recognisable prefix for the hosts and network (a shared machine).
    tag = f"{os.environ.get('PRODSTACK_E2E_NAME') or 'vps-multihost'}-{os.getpid()}"
    c = Cluster(tag, SUBNET, workdir, key)
    c.secrets = secrets
    c.data = {
        "image": images["v1"],
        "secrets_file": str(secrets_file),
        "replicas": 2,
        "rate_limit_per_minute": 1_000_000,
        "drain_seconds": 2,
        # Three hosts' replicas start on a shared 2-core machine: allow a slow first start.
        "ready_timeout_seconds": 180,
    }
    roles = {"web1": WEB1, "web2": WEB2, "db": DB}
    # Each host boots with its role's packages installed (tests/vps/host.py): this file
    # proves the split layout, tests/vps/test_e2e.py a first install on a fresh host.
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        host_images = dict(zip(("web", "db"), pool.map(provisioned_image, ("web", "db")),
                               strict=True))  # fmt: skip

    def start(role: str):
        # One .deb cache per role: the hosts may install at the same time (and apt's lock is
        # in the cache: another run on the machine names its own, PRODSTACK_APT_CACHE).
        cache = os.environ.get("PRODSTACK_APT_CACHE", "vps-apt-archives")
        return boot(f"{tag}-{role}", key, apt_cache=f"{cache}-{role}",
                    image=host_images["db" if role == "db" else "web"])  # fmt: skip

    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        booted = dict(zip(roles, pool.map(start, roles), strict=True))
    for role, address in roles.items():
        c.attach(role, booted[role], address)
    yield c
    if os.environ.get("PRODSTACK_KEEP_HOST"):
        print(f"kept hosts {[h.name for h in c.hosts.values()]} and network {tag}")
    else:
        c.destroy()


def _why(result) -> str:
    """What a failed run said: prodstack-release's lines and pyinfra's errors, then the end."""
    lines = [line for line in result.stdout.splitlines()
             if "prodstack-release" in line or "rror" in line]  # fmt: skip
    return "\n".join(lines[-60:]) + "\n...\n" + result.stdout[-1500:]


def layout(*webs: str) -> dict:
    """The inventory: one db host that lets exactly these web hosts in, and the web hosts.
    The db host is also where the test's load client runs, so nginx doesn't rate-limit it."""
    address = {"web1": WEB1, "web2": WEB2}
    exempt = ["127.0.0.0/8", "::1/128", f"{DB}/32"]
    return {
        "db": [("db", {"db_client_cidrs": [f"{address[w]}/32" for w in webs]})],
        "web": [(w, {"rate_limit_exempt_cidrs": exempt}) for w in webs],
    }


def _reachable(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=1.5):
            return True
    except OSError:
        return False


def _client(c, role: str) -> httpx.Client:
    return httpx.Client(
        base_url=f"https://{c.hosts[role].address}", verify=False, timeout=10,
        headers={"Authorization": f"Bearer {c.secrets['API_TOKEN']}"},
    )  # fmt: skip


def _in_api_container(c, role: str, script: str) -> dict:
    """Run a Python script in a replica on a web host: the app's drivers, its env, its CA."""
    host = c.hosts[role]
    name = host.run(
        "docker ps --filter label=prodstack.role=api --format '{{.Names}}' | head -n 1"
    ).stdout.strip()
    out = host.run(f"docker exec -i {name} python3 -", input=script, timeout=60)
    return json.loads(out.stdout.strip().splitlines()[-1])


# From inside an API container: PostgreSQL and Redis over verified TLS work, plaintext and
# an unverified server don't.
PROBE = r"""
import asyncio, json, os, socket, ssl
from urllib.parse import urlsplit
import asyncpg
out = {}
db = os.environ["DATABASE_URL"]
async def pg(url):
    conn = await asyncpg.connect(url, timeout=5)
    try:
        # As the login role itself: the owner (its default role) may not read the login
        # role's session statistics.
        await conn.execute("SET ROLE NONE")
        return await conn.fetchval("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
    finally:
        await conn.close()
out["pg_tls"] = asyncio.run(pg(db))
try:
    asyncio.run(pg(db.split("?")[0] + "?sslmode=disable"))
    out["pg_plain"] = "accepted"
except Exception as e:
    out["pg_plain"] = str(e)
try:
    asyncio.run(pg(db.split("?")[0] + "?sslmode=verify-full"))  # the system CAs only
    out["pg_unverified"] = "accepted"
except Exception as e:
    out["pg_unverified"] = type(e).__name__
r = urlsplit(os.environ["REDIS_URL"])
out["redis_scheme"] = r.scheme
def redis(context):
    s = socket.create_connection((r.hostname, r.port), timeout=5)
    try:
        if context:
            s = context.wrap_socket(s, server_hostname=r.hostname)
        # The app's ACL user (Redis's default user is off).
        s.sendall(f"AUTH {r.username} {r.password}\r\nPING\r\n".encode())
        data = b""
        while b"PONG" not in data:
            chunk = s.recv(100)
            if not chunk:
                break
            data += chunk
        return data.decode(errors="replace")
    except Exception as e:
        return type(e).__name__
    finally:
        s.close()
ca = r.query.split("ssl_ca_certs=")[1]
out["redis_tls"] = redis(ssl.create_default_context(cafile=ca))
out["redis_plain"] = redis(None)
out["redis_unverified"] = redis(ssl.create_default_context())
print(json.dumps(out))
"""


def test_two_hosts_deploy_in_one_run(cluster):
    result = cluster.pyinfra(layout("web1"), **cluster.data)
    assert result.returncode == 0, _why(result)
    assert grand_total(result.stdout)[2] == "-"
    with _client(cluster, "web1") as c:
        assert c.get("/health").json()["version"] == "e2e-1"
    # The CA key stayed on this machine: no host has it, the web host has only ca.crt.
    pki = cluster.workdir / "pki"
    assert (pki / "ca.key").exists() and oct((pki / "ca.key").stat().st_mode & 0o777) == "0o600"
    ca_key = (pki / "ca.key").read_text().strip().splitlines()[1]
    for role in ("web1", "db"):
        found = cluster.hosts[role].run(
            f"grep -rlF -- '{ca_key}' /etc /var/lib/prodstack 2>/dev/null || true"
        )
        assert found.stdout.strip() == "", f"CA key found on {role}: {found.stdout}"
    assert cluster.hosts["web1"].run("test -f /etc/prodstack/ca.crt", check=False).returncode == 0


def test_db_reachable_only_from_the_web_host_and_only_over_tls(cluster):
    db = cluster.hosts["db"]
    # From outside (this machine, on the db host's public side): nothing but SSH.
    assert not _reachable(db.address, 5432) and not _reachable(db.address, 6379)
    assert _reachable(db.address, 22)
    # From the private network: the web host gets through; the other host does not.
    probe = "python3 -c 'import socket,sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), 2)' "  # noqa: E501
    for port in (5432, 6379):
        cluster.hosts["web1"].run(probe + f"{DB} {port}")
        assert cluster.hosts["web2"].run(probe + f"{DB} {port}", check=False).returncode != 0
    out = _in_api_container(cluster, "web1", PROBE)
    print("probe from the API container:", out)
    assert out["pg_tls"] is True
    assert "no encryption" in out["pg_plain"], out
    assert out["pg_unverified"] != "accepted", out
    assert out["redis_scheme"] == "rediss"
    assert "+OK" in out["redis_tls"] and "+PONG" in out["redis_tls"], out
    assert "PONG" not in out["redis_plain"] and "NOAUTH" not in out["redis_plain"], out
    assert out["redis_unverified"] == "SSLCertVerificationError", out
    # The db host itself: Redis has no plaintext port; its health check passes over TLS.
    listening = db.run("ss -Htlnp | grep redis-server").stdout
    assert {line.split()[3] for line in listening.splitlines()} == {"127.0.0.1:6379", f"{DB}:6379"}
    db.run("systemctl start prodstack-healthcheck.service")
    status = db.run("systemctl show -p ExecMainStatus --value prodstack-healthcheck").stdout
    assert status.strip() == "0"


def test_api_works_through_nginx(cluster):
    with _client(cluster, "web1") as c:
        created = c.post("/api/v1/alerts", json={"message": "multi-host", "type": "test",
                                                  "priority": "low", "region": "eu"})  # fmt: skip
        assert created.status_code == 201, created.text
        cluster.alert_id = created.json()["id"]
        listed = c.get("/api/v1/alerts", params={"limit": 50}).json()
    assert cluster.alert_id in json.dumps(listed)


def _changed_operations(output: str) -> list[str]:
    """The results table's rows whose Success (changed) column is not '-'."""
    rows = re.findall(r"^\s*(.+?)\s{2,}(\d+)\s+(\S+)\s+(\S+)\s+(\S+)\s*$", output, re.M)
    return [r[0] for r in rows if r[2] != "-" and r[0] != "Grand total"]


def test_second_run_changes_nothing(cluster):
    result = cluster.pyinfra(layout("web1"), **cluster.data)
    assert result.returncode == 0, result.stdout[-3000:]
    operations, changed, errors = grand_total(result.stdout)
    assert (changed, errors) == ("-", "-"), _changed_operations(result.stdout)


def test_db_host_reboot_brings_everything_back_without_a_redeploy(cluster):
    db = cluster.hosts["db"]
    subprocess.run(["docker", "restart", "-t", "10", db.name], check=True, capture_output=True)
    deadline = time.monotonic() + 120
    ready = None
    with _client(cluster, "web1") as c:
        while time.monotonic() < deadline:
            try:
                ready = c.get("/health/ready")
                if ready.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        assert ready is not None and ready.status_code == 200, ready and ready.text
        assert cluster.alert_id in json.dumps(c.get("/api/v1/alerts", params={"limit": 50}).json())
    # The API can be served a moment before systemd has marked a unit started (pg_ctlcluster
    # polls for the server): each must reach `active` by itself, with no redeploy.
    for unit in ("postgresql@15-main", "redis-server"):
        state = ""
        while time.monotonic() < deadline + 30:
            state = db.run(f"systemctl is-active {unit}", check=False).stdout.strip()
            if state != "activating":
                break
            time.sleep(1)
        assert state == "active", db.run(f"systemctl status {unit} --no-pager", check=False).stdout
    # The OS hardening comes back with the host too (what a container lets apply, §11).
    options = db.run("awk '$2 == \"/proc\" {print $4}' /proc/mounts").stdout.strip()
    assert "hidepid=invisible" in options.split(","), options
    assert db.run("systemctl is-failed auditd.service", check=False).stdout.strip() != "failed"
    sysctl = db.run("cat /etc/sysctl.d/60-prodstack-hardening.conf").stdout.splitlines()
    assert "net.ipv4.ip_nonlocal_bind = 1" in sysctl


def test_three_hosts_a_second_web_host_joins(cluster):
    result = cluster.pyinfra(layout("web1", "web2"), **cluster.data)
    assert result.returncode == 0, _why(result)
    for role in ("web1", "web2"):
        with _client(cluster, role) as c:
            assert c.get("/health").json()["version"] == "e2e-1"
    out = _in_api_container(cluster, "web2", PROBE)
    assert out["pg_tls"] is True and "+PONG" in out["redis_tls"], out


def _started(host) -> list[float]:
    """When each API container on a host started (epoch seconds)."""
    script = (
        "docker inspect -f '{{.State.StartedAt}}' "
        "$(docker ps -q --filter label=prodstack.role=api) | "
        "xargs -n1 date +%s.%N -d"
    )
    return sorted(float(x) for x in host.run(script).stdout.split())


def test_rolling_deploy_one_web_host_at_a_time_loses_no_requests(cluster, images):
    load = Load(cluster.hosts["db"], cluster.secrets["API_TOKEN"], seconds=600,
                targets=(WEB1, WEB2))  # fmt: skip
    time.sleep(2)
    result = cluster.pyinfra(layout("web1", "web2"), **{**cluster.data, "image": images["v2"]})
    time.sleep(2)
    summary = load.stop()
    assert result.returncode == 0, _why(result)
    print("load across both web hosts during the rolling deploy:", summary)
    assert summary["failed"] == 0, summary["errors"]
    assert summary["targets"].get(WEB1, 0) > 50 and summary["targets"].get(WEB2, 0) > 50
    assert {"e2e-1", "e2e-2"} <= set(summary["versions"])
    for role in ("web1", "web2"):
        with _client(cluster, role) as c:
            assert c.get("/health").json()["version"] == "e2e-2"
    # One web host at a time: every replica on one host started before any on the other.
    first, second = sorted((_started(cluster.hosts[r]) for r in ("web1", "web2")), key=min)
    print(f"replicas started: {first} then {second}")
    assert max(first) < min(second)


def _last_switch(host) -> dict:
    """What prodstack-release recorded about its last nginx switch on this host."""
    return json.loads(host.run("cat /var/lib/prodstack/release/last-switch.json").stdout)


def test_blue_green_refuses_without_memory_for_two_sets(cluster, images):
    result = cluster.pyinfra(
        layout("web1", "web2"),
        **{**cluster.data, "image": images["v1"], "deploy_strategy": "blue_green",
           "container_memory_mb": 400_000},
    )  # fmt: skip
    assert result.returncode != 0
    assert re.search(r"2 replicas x 400000 MB = 800000 MB, but only \d+ MB are available",
                     result.stdout), result.stdout[-4000:]  # fmt: skip
    for role in ("web1", "web2"):
        with _client(cluster, role) as c:
            assert c.get("/health").json()["version"] == "e2e-2"


def test_blue_green_switch_then_rollback_within_the_bake(cluster, images):
    data = {**cluster.data, "deploy_strategy": "blue_green", "bake_seconds": 600}
    load = Load(cluster.hosts["db"], cluster.secrets["API_TOKEN"], seconds=600,
                targets=(WEB1, WEB2))  # fmt: skip
    time.sleep(2)
    deployed = cluster.pyinfra(layout("web1", "web2"), **{**data, "image": images["v1"]})
    assert deployed.returncode == 0, _why(deployed)
    switch = {}
    for role in ("web1", "web2"):
        with _client(cluster, role) as c:
            assert c.get("/health").json()["version"] == "e2e-1"
        record = _last_switch(cluster.hosts[role])
        assert record["action"] == "switch"
        switch[role] = record["seconds"]
        status = json.loads(cluster.hosts[role].run("prodstack-release status --json").stdout)
        # The old set still runs (baking), outside nginx's upstream.
        assert status["baking"]["image"] == images["v2"]
        assert len(status["baking"]["containers"]) == 2
        running = {r["image"] for r in status["replicas"] if r["running"]}
        assert running == {images["v1"], images["v2"]}
    # A reboot loses the bake's transient timer: at boot the resume unit schedules it again.
    web1 = cluster.hosts["web1"]
    web1.run("systemctl stop prodstack-release-retire.timer")
    assert web1.run("systemctl is-enabled prodstack-release-resume.service").stdout.strip() \
        == "enabled"  # fmt: skip
    web1.run("systemctl start prodstack-release-resume.service")
    assert web1.run("systemctl is-active prodstack-release-retire.timer").stdout.strip() \
        == "active"  # fmt: skip
    time.sleep(2)
    started = time.monotonic()
    rolled = cluster.pyinfra(layout("web1", "web2"), deploy="rollback.py", **data)
    rollback_wall = time.monotonic() - started
    time.sleep(2)
    summary = load.stop()
    assert rolled.returncode == 0, _why(rolled)
    print("load across both web hosts during switch and rollback:", summary)
    assert summary["failed"] == 0, summary["errors"]
    assert {"e2e-1", "e2e-2"} <= set(summary["versions"])
    for role in ("web1", "web2"):
        with _client(cluster, role) as c:
            assert c.get("/health").json()["version"] == "e2e-2"
        status = json.loads(cluster.hosts[role].run("prodstack-release status --json").stdout)
        assert status["baking"] is None and status["current"] == images["v2"]
        assert {r["image"] for r in status["replicas"] if r["running"]} == {images["v2"]}
    back = {}
    for role in ("web1", "web2"):
        record = _last_switch(cluster.hosts[role])
        assert record["action"] == "rollback"
        back[role] = record["seconds"]
    print(f"blue/green: nginx switch (nginx -t + reload) {switch}, rollback switch {back} "
          f"(seconds, per web host); rollback.py over SSH for both hosts {rollback_wall:.1f}s")


# From inside an API container: a fresh Redis connection as the app's user, with the
# password of its env file (or PASSWORD, when set), writes and reads a key.
REDIS_RW = r"""
import json, os, socket, ssl
from urllib.parse import unquote, urlsplit
r = urlsplit(os.environ["REDIS_URL"])
password = PASSWORD or unquote(r.password)
s = socket.create_connection((r.hostname, r.port), timeout=5)
if r.scheme == "rediss":
    ca = r.query.split("ssl_ca_certs=")[1]
    s = ssl.create_default_context(cafile=ca).wrap_socket(s, server_hostname=r.hostname)
def command(*words):
    s.sendall(f"*{len(words)}\r\n".encode()
              + b"".join(f"${len(w.encode())}\r\n{w}\r\n".encode() for w in words))
    return s.recv(1000).decode(errors="replace").strip()
out = {"auth": command("AUTH", r.username, password)}
if out["auth"] == "+OK":
    out["set"] = command("SET", "rotation-probe", "x")
    out["get"] = command("GET", "rotation-probe")
print(json.dumps(out))
"""


def _redis_as_app(c, role: str, password: str = "") -> dict:
    return _in_api_container(c, role, f"PASSWORD = {password!r}\n" + REDIS_RW)


def _alert_round_trip(c, role: str) -> None:
    """The API on `role` writes to and reads from PostgreSQL, and answers ready (Redis)."""
    with _client(c, role) as client:
        assert client.get("/health/ready").status_code == 200
        created = client.post("/api/v1/alerts", json={"message": f"rotation {role}",
                                                      "type": "test", "priority": "low",
                                                      "region": "eu"})  # fmt: skip
        assert created.status_code == 201, created.text
        listed = client.get("/api/v1/alerts", params={"limit": 50}).json()
    assert created.json()["id"] in json.dumps(listed)


# From inside an API container: a new PostgreSQL connection with the env file's URL (or as
# USER with PASSWORD, when set): who it is, or why it was refused.
PG_LOGIN = r"""
import asyncio, json, os
import asyncpg
async def main():
    kw = {"user": USER, "password": PASSWORD} if USER else {}
    try:
        conn = await asyncpg.connect(os.environ["DATABASE_URL"], timeout=5, **kw)
    except Exception as e:
        return {"refused": f"{type(e).__name__}: {e}"}
    try:
        row = await conn.fetchrow("SELECT session_user, current_user")
        return {"session_user": row[0], "current_user": row[1]}
    finally:
        await conn.close()
print(json.dumps(asyncio.run(main())))
"""


def _pg_as_app(c, role: str, user: str = "", password: str = "") -> dict:
    return _in_api_container(c, role, f"USER = {user!r}\nPASSWORD = {password!r}\n" + PG_LOGIN)


def _restart_replicas(c, role: str) -> None:
    """New processes, so new connections, with the env they were created with (not a
    rollout: the env file is read when a container is created)."""
    c.hosts[role].run("docker restart $(docker ps -q --filter label=prodstack.role=api)",
                      timeout=120)  # fmt: skip
    deadline = time.monotonic() + 120
    with _client(c, role) as client:
        while True:
            try:
                if client.get("/health/ready").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"{role}'s replicas not ready after a restart"
            time.sleep(1)


def test_redis_and_postgres_password_rotation_waits_for_every_web_host(cluster, images):
    """New REDIS_PASSWORD and POSTGRES_PASSWORD deployed with web2 left out (--limit): web2
    keeps working on the old ones, through new connections too (PostgreSQL: its old login
    role), and the deploy names web2; the next run over every web host switches web2 and
    only then drops the old password and the old login."""
    try:
        with _client(cluster, "web2") as c:
            version = c.get("/health").json()["version"]
    except httpx.HTTPError:
        version = None  # run alone (-k): the three-host layout is not deployed yet
    image = images["v2"] if version == "e2e-2" else images["v1"]
    data = {**cluster.data, "image": image}
    if version is None:
        first = cluster.pyinfra(layout("web1", "web2"), **data)
        assert first.returncode == 0, _why(first)
    old = cluster.secrets["REDIS_PASSWORD"]
    old_pg = cluster.secrets["POSTGRES_PASSWORD"]
    # Long values with every character a secret may hold besides letters and digits.
    new = "mh-redis-rotated-._~+/=" + uuid.uuid4().hex * 8
    new_pg = "mh-pg-rotated-._~+/=" + uuid.uuid4().hex * 8
    secrets = {**cluster.secrets, "REDIS_PASSWORD": new, "POSTGRES_PASSWORD": new_pg}
    rotated = cluster.workdir / "secrets-rotated.env"
    rotated.write_text("".join(f"{k}={v}\n" for k, v in secrets.items()))
    rotated.chmod(0o600)
    data["secrets_file"] = str(rotated)
    web2 = cluster.hosts["web2"].address

    limited = cluster.pyinfra(layout("web1", "web2"), **data,
                              args=("--limit", cluster.hosts["db"].address,
                                    "--limit", cluster.hosts["web1"].address))  # fmt: skip
    assert limited.returncode == 0, _why(limited)
    assert re.search(rf"Redis still accepts the old password: web host\(s\) {re.escape(web2)} "
                     "did not confirm", limited.stdout), limited.stdout[-3000:]  # fmt: skip
    assert re.search(rf"PostgreSQL still accepts the old password: web host\(s\) "
                     rf"{re.escape(web2)} did not confirm", limited.stdout), limited.stdout[-3000:]
    print("\n".join(line for line in limited.stdout.splitlines() if "old password" in line))
    for secret in (new, old, new_pg, old_pg):
        assert secret not in limited.stdout
    # web2 was left out: its replicas still use the old passwords, and keep working, with
    # new connections too (restarted: PostgreSQL's old login role still logs in).
    _restart_replicas(cluster, "web2")
    assert _redis_as_app(cluster, "web2") == {"auth": "+OK", "set": "+OK", "get": "$1\r\nx"}
    assert _pg_as_app(cluster, "web2") == {"session_user": "prodstack_a",
                                           "current_user": "prodstack"}  # fmt: skip
    _alert_round_trip(cluster, "web2")
    # web1 switched to the other login role, the new password's; the owner owns what either
    # creates (its default role).
    assert _pg_as_app(cluster, "web1") == {"session_user": "prodstack_b",
                                           "current_user": "prodstack"}  # fmt: skip
    assert "refused" in _pg_as_app(cluster, "web1", "prodstack_b", old_pg)
    assert _redis_as_app(cluster, "web1")["auth"] == "+OK"  # switched: the new password
    assert _redis_as_app(cluster, "web1", old)["auth"] == "+OK"  # the old one still works
    marker = json.loads(cluster.hosts["web1"].run("cat /var/lib/prodstack/credentials.json").stdout)
    assert new not in json.dumps(marker) and len(marker["fingerprints"]["redis"]) == 16
    assert new_pg not in json.dumps(marker)
    assert re.fullmatch(r"prodstack_b:[0-9a-f]{16}", marker["fingerprints"]["postgres"])

    full = cluster.pyinfra(layout("web1", "web2"), **data)
    assert full.returncode == 0, _why(full)
    assert "still accepts the old password" not in full.stdout
    cluster.secrets.update(REDIS_PASSWORD=new, POSTGRES_PASSWORD=new_pg)
    cluster.data["secrets_file"] = str(rotated)
    for role in ("web1", "web2"):
        assert _redis_as_app(cluster, role) == {"auth": "+OK", "set": "+OK", "get": "$1\r\nx"}
        assert "WRONGPASS" in _redis_as_app(cluster, role, old)["auth"]
        assert _pg_as_app(cluster, role)["session_user"] == "prodstack_b"
        _alert_round_trip(cluster, role)
    # The old login role is off, its password gone: the old password is refused.
    refused = _pg_as_app(cluster, "web1", "prodstack_a", old_pg)
    assert re.search("password authentication failed|not permitted to log in",
                     refused.get("refused", "")), refused  # fmt: skip
    logins = cluster.hosts["db"].run(
        "runuser -u postgres -- psql -XAt -d postgres -c \"SELECT rolname, rolcanlogin, "
        "rolpassword IS NULL FROM pg_authid WHERE rolname LIKE 'prodstack%' ORDER BY 1\""
    ).stdout.split()
    assert logins == ["prodstack|f|t", "prodstack_a|f|t", "prodstack_b|t|f"]
    same = {json.loads(cluster.hosts[r].run("cat /var/lib/prodstack/credentials.json").stdout)
            ["fingerprints"]["redis"] for r in ("web1", "web2")}  # fmt: skip
    assert same == {marker["fingerprints"]["redis"]}
