"""The operator verbs against the shared e2e host: `prodstack status | logs | exec | lock |
audit --profile vps -i pyinfra/inventory.py`, run as a user runs them (a subprocess of the
CLI, SSH through pyinfra's connector with the inventory the deploy uses).

Runs after the deploy (conftest.py's session `stack`) and leaves the host serving, the
deploy lock released.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.docker, pytest.mark.e2e, pytest.mark.timeout(900)]

# Someone else, as far as the deploy is concerned: the lock's holder in these tests.
ALICE = "alice@ops-laptop"


def prodstack(stack, *args: str, operator: str | None = None,
              timeout: float = 120) -> subprocess.CompletedProcess:  # fmt: skip
    env = {
        **os.environ,
        "PRODSTACK_HOST": stack.host.address,
        "PRODSTACK_SSH_KEY": str(stack.host.key),
        "PRODSTACK_SSH_KNOWN_HOSTS": "/dev/null",
        "PRODSTACK_SSH_USER": stack.ssh_user,
        "PRODSTACK_SSH_PORT": str(stack.ssh_port),
    }
    env.pop("PRODSTACK_OPERATOR", None)
    if operator:
        env["PRODSTACK_OPERATOR"] = operator
    verb, *rest = args
    return subprocess.run(
        [sys.executable, "-m", "prodstack", verb, "--profile", "vps", "-i",
         "pyinfra/inventory.py", *rest],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def _ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


@pytest.fixture(scope="module")
def posted(stack):
    """One POST /api/v1/alerts, with the request id the API answered."""
    with stack.client() as c:
        r = c.post("/api/v1/alerts", json={"message": f"operate {uuid.uuid4().hex[:6]}",
                                           "type": "test", "priority": "low", "region": "eu"})
    assert r.status_code in (200, 201), r.text
    return r.headers["x-request-id"]


def _serving(stack) -> str:
    """The image serving now, as the host's release script says."""
    release = "/usr/local/sbin/prodstack-release"
    out = stack.host.run(f"{release} status --json || {release} status").stdout
    return json.loads(out)["current"]


def _status(stack) -> dict:
    """`status --format json`, once Prometheus has scraped both database exporters and the
    backup metrics (right after a first deploy it may not have yet, the first backup being
    the deploy's last step: status then says "unknown" and "none recorded")."""
    deadline = time.monotonic() + 180
    while True:
        (host,) = json.loads(_ok(prodstack(stack, "status", "--format", "json")))["hosts"]
        # Up, not merely scraped: an earlier file on this shared host stops Redis and starts
        # it again, and status reports the last scrape, up to one interval (15 s) old.
        scraped = host["postgres_up"] is True and host["redis_up"] is True and host["backups"]
        if scraped or time.monotonic() > deadline:
            return host
        time.sleep(5)


def test_status_shows_the_release_three_ready_replicas_and_the_last_backup(stack, posted):
    host = _status(stack)
    assert host["release"]["current"] == _serving(stack)
    ready = [r for r in host["replicas"] if r["ready"] and r["in_upstream"]]
    assert [r["replica"] for r in ready] == [1, 2, 3]
    assert {r["image"] for r in ready} == {host["release"]["current"]}
    assert sorted(host["upstream"]) == sorted(f"127.0.0.1:{r['port']}" for r in ready)
    assert host["postgres_up"] is True and host["redis_up"] is True
    assert host["backups"]["full"]["finished_at"].endswith("Z")
    markdown = _ok(prodstack(stack, "status"))
    assert "3/3 ready and routed" in markdown
    assert f"release: `{host['release']['current']}`" in markdown
    # The newest backup of any kind (the suite's earlier files may have run a diff one).
    newest = max(host["backups"].items(), key=lambda kv: kv[1]["finished_at"])
    assert f"- last backup: {newest[0]}, finished {newest[1]['finished_at']} " in markdown


def test_logs_by_request_id_find_that_request_among_all_replicas(stack, posted):
    out = _ok(prodstack(stack, "logs", "--request-id", posted, "--since", "30m"))
    lines = out.splitlines()
    assert len(lines) == 1, out
    source, _when, text = lines[0].split(" ", 2)
    assert source.startswith(f"{stack.host.address}/replica-")
    record = json.loads(text)
    assert (record["request_id"], record["method"], record["route"]) == \
        (posted, "POST", "/api/v1/alerts")  # fmt: skip


def test_logs_merge_the_replicas_in_time_order(stack):
    out = _ok(prodstack(stack, "logs", "--since", "2m", "--format", "json"))
    entries = [json.loads(line) for line in out.splitlines()]
    assert len({e["source"] for e in entries}) == 3, {e["source"] for e in entries}
    stamps = [e["time"] for e in entries]
    assert stamps == sorted(stamps)  # all UTC with nanoseconds: text order is time order


def test_logs_follow_shows_a_new_request_within_two_seconds(stack):
    env_args = ("logs", "-f", "--since", "1s", "--grep", "/api/v1/alerts")
    env = {**os.environ, "PRODSTACK_HOST": stack.host.address,
           "PRODSTACK_SSH_KEY": str(stack.host.key), "PRODSTACK_SSH_KNOWN_HOSTS": "/dev/null"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "prodstack", env_args[0], "--profile", "vps", "-i",
         "pyinfra/inventory.py", *env_args[1:]],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    seen: list[tuple[float, str]] = []

    def read() -> None:
        for line in proc.stdout:
            seen.append((time.monotonic(), line))

    threading.Thread(target=read, daemon=True).start()
    try:
        # Until the followers run, a request would be missed: warm them with requests
        # until one shows, then time a fresh one.
        with stack.client() as c:
            deadline = time.monotonic() + 60
            while not seen and time.monotonic() < deadline and proc.poll() is None:
                c.get("/api/v1/alerts", params={"limit": 1})
                time.sleep(0.5)
            assert seen, proc.stderr.read() if proc.poll() is not None else "no line in 60 s"
            request_id = f"follow-{uuid.uuid4().hex}"
            c.get("/api/v1/alerts", params={"limit": 1}, headers={"X-Request-ID": request_id})
            answered = time.monotonic()
        while time.monotonic() < answered + 5:
            hit = [at for at, line in seen if request_id in line]
            if hit:
                break
            time.sleep(0.05)
        assert hit, "the followed logs never showed the request"
        assert hit[0] - answered <= 2.0, f"shown {hit[0] - answered:.2f}s after the response"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _exec_containers(stack) -> str:
    return stack.host.run("docker ps -aq --filter label=prodstack.role=exec").stdout.strip()


def test_exec_runs_a_one_off_container_and_removes_it(stack):
    result = prodstack(stack, "exec", "--", "python", "-c", "print(6*7)")
    assert (result.returncode, result.stdout.strip()) == (0, "42"), result.stderr
    assert _exec_containers(stack) == ""


def test_exec_passes_arguments_verbatim_and_returns_the_exit_code(stack):
    hostile = "it's \"quoted\"; $(touch /tmp/pwned) `id`\nsecond line"
    result = prodstack(stack, "exec", "--", "python", "-c",
                       "import sys; print(sys.argv[1]); sys.exit(7)", hostile)  # fmt: skip
    assert result.returncode == 7, result.stderr
    assert result.stdout == hostile + "\n"
    assert stack.host.run("ls /tmp/pwned", check=False).returncode != 0
    assert _exec_containers(stack) == ""


def test_exec_is_confined_like_a_replica(stack):
    """No capabilities, a read-only root and the app's env (the database URL is set)."""
    probe = ("import os; caps = [l for l in open('/proc/self/status') if l.startswith('CapEff')]"
             "\ntry:\n    open('/probe', 'w')\n    ro = 'writable'\nexcept OSError:\n    ro = "
             "'read-only'\nprint(caps[0].split()[1], ro, 'DATABASE_URL' in os.environ)")
    out = _ok(prodstack(stack, "exec", "--", "python", "-c", probe)).split()
    assert out == ["0000000000000000", "read-only", "True"]


def test_a_deploy_refuses_at_once_while_someone_else_holds_the_lock(stack):
    held = prodstack(stack, "lock", "acquire", "-m", "db work", operator=ALICE)
    try:
        assert held.returncode == 0, held.stderr
        assert f"held by {ALICE}" in held.stdout and '"db work"' in held.stdout
        # A second operator cannot take it.
        other = prodstack(stack, "lock", "acquire", "-m", "mine now")
        assert other.returncode == 1 and ALICE in other.stderr and "db work" in other.stderr

        deploy = stack.pyinfra()
        assert deploy.returncode != 0
        assert f"deploy lock held by {ALICE}" in deploy.stdout and "db work" in deploy.stdout
        # At once: while pyinfra loads the deploy, before its operation run begins. (A bound
        # in seconds measured the machine's load, not the deploy: 16 s under a CI run.)
        assert "Beginning operation run" not in deploy.stdout, deploy.stdout[-3000:]

        current = _serving(stack)
        replicas = stack.host.run("docker ps -q | sort").stdout
        on_host = stack.host.run(f"/usr/local/sbin/prodstack-release deploy {current}",
                                 check=False)  # fmt: skip
        assert on_host.returncode == 1
        assert stack.host.run("docker ps -q | sort").stdout == replicas  # nothing replaced
        assert f'refused to deploy: deploy lock held by {ALICE}' in on_host.stdout
        assert '"db work"' in on_host.stdout
        # Its holder deploys through it (here: already in sync, nothing to do).
        mine = stack.host.run(f"PRODSTACK_DEPLOY_BY={ALICE} /usr/local/sbin/prodstack-release "
                              f"deploy {current}", check=False)  # fmt: skip
        assert mine.returncode == 0, mine.stdout + mine.stderr
        # Only the holder releases it, unless forced.
        assert prodstack(stack, "lock", "release").returncode == 1
    finally:
        released = prodstack(stack, "lock", "release", operator=ALICE)
    assert released.returncode == 0, released.stderr
    assert "not held" in _ok(prodstack(stack, "lock", "status"))


def test_audit_lists_the_deploy_the_lock_and_the_exec(stack):
    entries = json.loads(_ok(prodstack(stack, "audit", "--format", "json")))
    events = [(e["event"], e["by"]) for e in entries]
    assert any(event == "deploy" for event, _ in events), events
    assert ("lock-acquire", ALICE) in events
    assert ("lock-release", ALICE) in events
    assert any(event == "lock-refused" for event, _ in events), events
    execs = [e for e in entries if e["event"] == "exec"]
    assert any(json.loads(e["command"]) == ["python", "-c", "print(6*7)"] for e in execs)
    assert [e["time"] for e in entries] == sorted(e["time"] for e in entries)
    # Root's, readable by the adm group, never by others.
    mode = stack.host.run("stat -c '%U:%G %a' /var/log/prodstack/audit.log").stdout.split()
    assert mode == ["root:adm", "640"]
