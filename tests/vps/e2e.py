"""What the VPS end-to-end tests share: the deploy driver, the in-host load loop, and helpers.

One host is booted and deployed once per test session (the `stack` fixture in conftest.py);
every `test_e2e*.py` file uses it, so the first deploy is paid once.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx

from tests.support.docker import python_base_image
from tests.vps.host import Host

REPO = Path(__file__).resolve().parents[2]
PYINFRA_DIR = REPO / "pyinfra"

# A bounded load loop, run with the host's python3: N threads each open a fresh TLS
# connection per request to nginx (on loopback, or alternating between the given
# addresses), at a steady rate, until the stop file appears, the request budget is spent or
# the time limit passes. Prints a JSON summary.
LOAD_LOOP = r"""
import http.client, json, os, ssl, sys, threading, time
seconds, budget, stop_file, token = float(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
targets, rate = sys.argv[5].split(","), float(sys.argv[6])
start = time.monotonic()
deadline = start + seconds
ctx = ssl._create_unverified_context()
lock = threading.Lock()
out = {"ok": 0, "failed": 0, "errors": [], "versions": {}, "targets": {}, "stopped": None}
sent = 0
def worker(n):
    global sent
    while True:
        with lock:
            reason = ("stop file" if os.path.exists(stop_file) else "request budget"
                      if sent >= budget else "time limit" if time.monotonic() > deadline else None)
            if reason:
                out["stopped"] = out["stopped"] or reason
                return
            sent += 1
            i = sent
        # Request i is due at start + i/rate: spread evenly over the test's window.
        time.sleep(max(0.0, start + i / rate - time.monotonic()))
        path = "/health" if i % 2 else "/api/v1/alerts?limit=5"
        target = targets[(i // 2) % len(targets)]
        try:
            conn = http.client.HTTPSConnection(target, 443, context=ctx, timeout=10)
            conn.request("GET", path, headers={"Authorization": "Bearer " + token})
            r = conn.getresponse()
            body = r.read()
            conn.close()
            with lock:
                if r.status == 200:
                    out["ok"] += 1
                    out["targets"][target] = out["targets"].get(target, 0) + 1
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


# Requests a second: one every 25 ms, so a window of failed requests longer than that
# (a replica stopped before it drained, a reload that drops connections) is seen, without
# the loop's TLS handshakes taking the CPU the deploy under test needs (unpaced, four
# threads took a whole core of a 2-core machine, in the client, nginx and the replicas).
LOAD_RATE = 40.0


class Load:
    """A bounded load loop inside the host, stopped by a file or its own limits.

    `stop()` requires that the test stopped it: a loop that ran out of time or requests
    first did not cover what the test measured (a deploy that took longer, say), and a
    summary of it would pass or fail for the wrong reason."""

    def __init__(self, host: Host, token: str, seconds: int = 900, budget: int = 200_000,
                 targets: tuple[str, ...] = ("127.0.0.1",), rate: float = LOAD_RATE):  # fmt: skip
        self.host = host
        self.stop_file = f"/tmp/load-stop-{uuid.uuid4().hex}"
        self.proc = subprocess.Popen(
            ["docker", "exec", "-i", host.name, "python3", "-", str(seconds), str(budget),
             self.stop_file, token, ",".join(targets), str(rate)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.proc.stdin.write(LOAD_LOOP)
        self.proc.stdin.close()

    def stop(self) -> dict:
        self.host.run(f"touch {self.stop_file}")
        out = self.proc.stdout.read()
        self.proc.wait(timeout=60)
        assert self.proc.returncode == 0, self.proc.stderr.read()
        summary = json.loads(out)
        assert summary["stopped"] == "stop file", (
            f"the load loop ended on its {summary['stopped']} before the test stopped it: "
            f"give Load more seconds or requests ({summary['ok']} ok, {summary['failed']} failed)")
        return summary


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
        # How pyinfra logs in (inventory.py's PRODSTACK_SSH_USER/PORT). A test that changes
        # them puts them back before the next file runs.
        self.ssh_user = "root"
        self.ssh_port = 22

    @property
    def proxy_protocol_port(self) -> int:
        """Where the host takes PROXY-protocol connections (group_data/all.py's default)."""
        return int(self.data.get("proxy_protocol_port", 8443))

    def pyinfra(self, deploy: str = "deploy.py", *, options: tuple[str, ...] = (),
                **data) -> subprocess.CompletedProcess:  # fmt: skip
        args = [sys.executable, "-m", "pyinfra", "-y", *options, "inventory.py", deploy]
        for key, value in {**self.data, **data}.items():
            args += ["--data", f"{key}={value}"]
        env = {
            **os.environ,
            "PRODSTACK_HOST": self.host.address,
            "PRODSTACK_SSH_KEY": str(self.host.key),
            "PRODSTACK_SSH_KNOWN_HOSTS": "/dev/null",
            "PRODSTACK_SSH_USER": self.ssh_user,
            "PRODSTACK_SSH_PORT": str(self.ssh_port),
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


class WebhookReceiver:
    """An HTTP server in the test process that records Alertmanager's webhook posts."""

    def __init__(self, address: str):
        import http.server
        import threading

        self.posts: list[dict] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver._lock:
                    receiver.posts.append({"at": time.time(), **json.loads(body)})
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer((address, free_port(address)), Handler)
        self.url = f"http://{address}:{self.server.server_address[1]}/alerts"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def alerts(self, since: float = 0.0) -> list[dict]:
        """Every alert received after `since`, with the post's time."""
        with self._lock:
            return [
                {"at": post["at"], **alert}
                for post in self.posts
                if post["at"] >= since
                for alert in post.get("alerts", [])
            ]

    def wait_for(self, name: str, status: str, since: float, timeout: float, **labels) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for alert in self.alerts(since):
                if (
                    alert["labels"].get("alertname") == name
                    and alert["status"] == status
                    and all(alert["labels"].get(k) == v for k, v in labels.items())
                ):
                    return alert
            time.sleep(1)
        seen = [(a["labels"].get("alertname"), a["status"]) for a in self.alerts(since)]
        raise AssertionError(f"no {status} {name} {labels} within {timeout:.0f}s; got {seen}")

    def close(self) -> None:
        self.server.shutdown()


def grand_total(output: str) -> tuple[int, str, str]:
    """(operations, changed, errors) from pyinfra's results table."""
    match = re.search(r"Grand total\s+(\d+)\s+(\S+)\s+(\S+)\s+(\S+)", output)
    assert match, output[-3000:]
    return int(match.group(1)), match.group(2), match.group(3)


def _remove_abandoned_networks(subnet: str) -> None:
    """Remove a network on `subnet` that a killed run left without containers: Docker
    refuses a second network on the same subnet, so it would fail this run's setup. A
    network with containers is another live run's, and is left alone."""
    names = subprocess.run(["docker", "network", "ls", "-q", "--filter", "driver=bridge"],
                           capture_output=True, text=True).stdout.split()  # fmt: skip
    if not names:
        return
    inspected = subprocess.run(["docker", "network", "inspect", *names],
                               capture_output=True, text=True)  # fmt: skip
    for net in json.loads(inspected.stdout or "[]"):
        subnets = {c.get("Subnet") for c in (net.get("IPAM") or {}).get("Config") or []}
        if subnet in subnets and not net.get("Containers"):
            subprocess.run(["docker", "network", "rm", net["Id"]], capture_output=True)


class Cluster:
    """Several test hosts on one private Docker network, deployed by one pyinfra run.

    Each host boots on the default bridge (its public side) and is then connected to the
    private network at a fixed address, as a VPS provider's private network would be.
    """

    def __init__(self, name: str, subnet: str, workdir: Path, key: Path):
        self.name = name
        self.workdir = workdir
        self.key = key
        self.hosts: dict[str, Host] = {}
        self.private: dict[str, str] = {}
        subprocess.run(["docker", "network", "rm", name], capture_output=True)
        _remove_abandoned_networks(subnet)
        subprocess.run(
            ["docker", "network", "create", "--subnet", subnet, name],
            check=True, capture_output=True,
        )  # fmt: skip

    def attach(self, role: str, host: Host, address: str) -> None:
        subprocess.run(
            ["docker", "network", "connect", "--ip", address, self.name, host.name],
            check=True, capture_output=True,
        )  # fmt: skip
        self.hosts[role] = host
        self.private[role] = address

    def pyinfra(self, groups: dict[str, list[tuple[str, dict]]], *, deploy: str = "deploy.py",
                args: tuple[str, ...] = (), **data) -> subprocess.CompletedProcess:
        """Run `deploy` over an inventory of {group: [(role, host data)]}."""
        common = {"ssh_user": "root", "ssh_key": str(self.key),
                  "ssh_known_hosts_file": "/dev/null", "ssh_strict_host_key_checking": "off"}
        lines = ["# Written by tests/vps/e2e.py: Cluster.pyinfra"]
        for group, members in groups.items():
            entries = [
                (self.hosts[r].address, {**common, "private_address": self.private[r], **extra})
                for r, extra in members
            ]
            lines.append(f"{group} = {entries!r}")
        inventory = self.workdir / "inventory.py"
        inventory.write_text("\n".join(lines) + "\n")
        command = [sys.executable, "-m", "pyinfra", "-y", *args, str(inventory), deploy]
        for key, value in data.items():
            command += ["--data", f"{key}={value}"]
        started = time.monotonic()
        result = subprocess.run(
            command, cwd=PYINFRA_DIR, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, timeout=900,
        )  # fmt: skip
        log = self.workdir / f"pyinfra-{deploy}-{int(started)}.log"
        log.write_text(result.stdout)
        print(f"pyinfra {deploy} on {sorted(self.hosts)}: rc={result.returncode} in "
              f"{time.monotonic() - started:.0f}s (log: {log})")  # fmt: skip
        return result

    def destroy(self) -> None:
        from tests.vps.host import destroy

        for host in self.hosts.values():
            destroy(host.name)
        subprocess.run(["docker", "network", "rm", self.name], capture_output=True)


PROMETHEUS = "http://127.0.0.1:9090"


def prometheus(stack, path: str, **params) -> dict:
    """The `data` of a Prometheus HTTP API answer, queried inside the host (loopback only)."""
    args = " ".join(f"--data-urlencode {shlex.quote(f'{k}={v}')}" for k, v in params.items())
    out = stack.host.run(f"curl -fsS -G {args} {PROMETHEUS}{path}").stdout
    body = json.loads(out)
    assert body["status"] == "success", body
    return body["data"]
