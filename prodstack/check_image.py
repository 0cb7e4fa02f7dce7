"""`prodstack check-image IMAGE`: run any image against the image contract
(prodstack/image_contract.py) with a real PostgreSQL and Redis, one line per clause.

PostgreSQL and Redis are the Debian packages' binaries, started from throwaway directories
on loopback (prodstack/local_services.py; they need root, as `postgres` runs as its own
user). The image runs with host networking, so it reaches them on 127.0.0.1, on a free
$PORT, and confined as a VPS replica runs: read-only root with a /tmp tmpfs, no
capabilities, no privilege gain.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import asdict, dataclass
from typing import Any

from prodstack import image_contract as contract
from prodstack.errors import UsageError

EXAMPLES = """examples:
  prodstack check-image prodstack-api:1a2b3c4d5e6f
  prodstack check-image my-app:v3 --format json
  prodstack check-image my-app:v3 --stop-timeout 10   # a stricter drain than the contract's
"""
MIGRATE_TIMEOUT_SECONDS = 300


@dataclass
class Result:
    clause: str
    status: str  # pass | fail | skip (an optional clause the image does not provide)
    detail: str


def http_get(url: str, timeout: float) -> tuple[int, str]:
    """(status, body) of a GET; the standard library, as the CLI's install has no HTTP
    client of its own. A connection failure raises OSError (URLError is one)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (loopback)
            return response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as error:
        return error.code, ""

def progress(message: str) -> None:
    print(f"check-image: {message}", file=sys.stderr, flush=True)


def docker(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)


def confinement(read_only: bool) -> list[str]:
    """How a VPS replica runs (pyinfra/files/prodstack-release's `confined`)."""
    tmpfs = f"{contract.WRITABLE_PATH}:rw,nosuid,nodev,noexec,size={contract.TMPFS_SIZE_MB}m"
    return ["--network", "host", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
            "--pids-limit", "512", "--tmpfs", tmpfs, *(["--read-only"] if read_only else [])]


class Run:
    """One check of one image: the databases, the containers it started, the results."""

    def __init__(self, image: str, env: dict[str, str], stop_timeout: float):
        self.image = image
        self.env = env
        self.stop_timeout = stop_timeout
        self.results: list[Result] = []
        self.names: list[str] = []

    def add(self, clause: str, status: str, detail: str) -> None:
        self.results.append(Result(clause, status, detail))
        progress(f"{status} {clause}: {detail}")

    def env_args(self) -> list[str]:
        # Values go through docker's environment, never on its command line.
        return [arg for name in (*self.env, "PORT") for arg in ("--env", name)]

    def oneshot(self, command: str, timeout: float) -> subprocess.CompletedProcess | None:
        name = f"prodstack-check-{command}-{uuid.uuid4().hex[:8]}"
        args = ["docker", "run", "--rm", "--name", name, *confinement(True),
                *self.env_args(), self.image, command]  # fmt: skip
        try:
            return subprocess.run(args, capture_output=True, text=True, timeout=timeout,
                                  env=self.process_env(0))  # fmt: skip
        except subprocess.TimeoutExpired:
            docker("rm", "-f", name)
            return None

    def process_env(self, port: int) -> dict[str, str]:
        return {**os.environ, **self.env, "PORT": str(port or contract.PORT)}

    def serve(self, read_only: bool, port: int) -> str:
        name = f"prodstack-check-serve-{uuid.uuid4().hex[:8]}"
        result = subprocess.run(
            ["docker", "run", "--detach", "--name", name, *confinement(read_only),
             *self.env_args(), self.image, contract.SERVE],
            capture_output=True, text=True, env=self.process_env(port), timeout=120,
        )  # fmt: skip
        self.names.append(name)
        if result.returncode != 0:
            raise UsageError(f"docker run {self.image} failed: {result.stderr.strip()}")
        return name

    def running(self, name: str) -> bool:
        out = docker("inspect", "--format", "{{.State.Running}}", name)
        return out.stdout.strip() == "true"

    def wait_for(self, name: str, url: str, timeout: float) -> tuple[int | None, float]:
        """(HTTP status of the last answer or None, seconds) once it answers 200, the
        container stops or the time is up."""
        started = time.monotonic()
        status = None
        while time.monotonic() - started < timeout:
            try:
                status, _ = http_get(url, timeout=2)
                if status == 200:
                    break
            except OSError:
                pass
            if not self.running(name):
                break
            time.sleep(0.3)
        return status, time.monotonic() - started

    def logs(self, name: str) -> str:
        out = docker("logs", "--tail", "5", name)
        return " | ".join((out.stdout + out.stderr).strip().splitlines()[-5:])[-400:]

    def close(self) -> None:
        for name in self.names:
            docker("rm", "-f", name)


def check_user(run: Run, config: dict[str, Any]) -> None:
    user = (config.get("User") or "").strip()
    if not user or re.match(r"^(root|0)(:|$)", user):
        run.add("non-root", "fail", f"the image's USER is {user or 'unset'}: it runs as root; "
                "set a numeric non-root user such as USER 10001:10001")
    else:
        run.add("non-root", "pass", f"USER {user}")


def check_migrate(run: Run) -> bool:
    timings = []
    for attempt in ("first run", "second run"):
        started = time.monotonic()
        result = run.oneshot(contract.MIGRATE, MIGRATE_TIMEOUT_SECONDS)
        if result is None:
            run.add("migrate", "fail", f"{attempt} did not finish in {MIGRATE_TIMEOUT_SECONDS}s")
            return False
        if result.returncode != 0:
            tail = " | ".join((result.stdout + result.stderr).strip().splitlines()[-3:])
            run.add("migrate", "fail", f"{attempt} exited {result.returncode}: {tail[-300:]}")
            return False
        timings.append(f"{time.monotonic() - started:.1f}s")
    run.add("migrate", "pass", f"exit 0 on an empty database and again ({', '.join(timings)})")
    return True


def check_schema_version(run: Run) -> None:
    result = run.oneshot(contract.SCHEMA_VERSION, 60)
    lines = result.stdout.strip().splitlines() if result is not None else []
    if result is not None and result.returncode == 0 and lines:
        run.add("schema-version", "pass", f"the database is at {lines[-1].strip()}")
    else:
        code = "no answer in 60s" if result is None else f"exit {result.returncode}"
        run.add("schema-version", "skip", f"not provided ({code}): rollbacks are not checked "
                "against the schema")  # fmt: skip


def writes_outside_tmp(run: Run, name: str) -> list[str]:
    """Paths the container changed in its root filesystem (docker diff), /tmp aside."""
    out = docker("diff", name).stdout.split("\n")
    paths = [line.split(None, 1)[1] for line in out if line[:2] in ("A ", "C ")]
    # A changed directory is listed above what changed in it: name only the innermost.
    return [p for p in paths if not p.startswith(contract.WRITABLE_PATH)
            and not any(other.startswith(p.rstrip("/") + "/") for other in paths)]


def check_serving(run: Run) -> None:
    from prodstack.local_services import free_port

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    name = run.serve(True, port)
    live, seconds = run.wait_for(name, base + contract.HEALTH_LIVE, contract.READY_TIMEOUT_SECONDS)
    if live == 200:
        run.add("read-only root", "pass", f"serves with --read-only; only {contract.WRITABLE_PATH}"
                " is writable")  # fmt: skip
    else:
        # Does it serve with a writable root? Then the read-only root is what it breaks.
        logs = run.logs(name)
        docker("rm", "-f", name)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        name = run.serve(False, port)
        live, seconds = run.wait_for(name, base + contract.HEALTH_LIVE,
                                     contract.READY_TIMEOUT_SECONDS)  # fmt: skip
        if live == 200:
            wrote = writes_outside_tmp(run, name) or ["(nothing docker diff shows)"]
            run.add("read-only root", "fail", f"it serves only with a writable root; it wrote "
                    f"{', '.join(wrote[:5])} (read-only run: {logs})")  # fmt: skip
        else:
            run.add("read-only root", "fail", "not checked: it does not serve at all")
    if live != 200:
        run.add("live", "fail", f"{contract.HEALTH_LIVE} answered {live or 'nothing'} within "
                f"{seconds:.0f}s; last log lines: {run.logs(name)}")  # fmt: skip
        for clause in ("ready", "sigterm"):
            run.add(clause, "fail", "not checked: the server never became live")
        return
    run.add("live", "pass", f"{contract.HEALTH_LIVE} 200 after {seconds:.1f}s on $PORT {port}")
    ready, seconds = run.wait_for(name, base + contract.HEALTH_READY,
                                  contract.READY_TIMEOUT_SECONDS)  # fmt: skip
    if ready == 200:
        run.add("ready", "pass", f"{contract.HEALTH_READY} 200 after {seconds:.1f}s")
    else:
        run.add("ready", "fail", f"{contract.HEALTH_READY} answered {ready or 'nothing'} "
                f"within {seconds:.0f}s with PostgreSQL and Redis up")  # fmt: skip
    try:
        status, text = http_get(base + contract.METRICS, timeout=5)
        if status == 200 and "# TYPE" in text:
            run.add("metrics", "pass", f"{contract.METRICS} answers Prometheus text")
        else:
            run.add("metrics", "skip", f"{contract.METRICS} answered {status}")
    except OSError as error:
        run.add("metrics", "skip", f"{contract.METRICS}: {type(error).__name__}")
    check_process_user(run, name)
    check_sigterm(run, name)


def check_process_user(run: Run, name: str) -> None:
    """The serving process's real uid, from the host's /proc: what `USER` promised."""
    pid = docker("inspect", "--format", "{{.State.Pid}}", name).stdout.strip()
    try:
        with open(f"/proc/{pid}/status") as status:
            uid = next(line.split()[1] for line in status if line.startswith("Uid:"))
    except (OSError, StopIteration):
        return
    if uid == "0":
        for result in run.results:
            if result.clause == "non-root" and result.status == "pass":
                result.status, result.detail = "fail", "the serving process runs as uid 0"


def check_sigterm(run: Run, name: str) -> None:
    started = time.monotonic()
    docker("kill", "--signal", "TERM", name)
    try:
        code = docker("wait", name, timeout=run.stop_timeout).stdout.strip()
    except subprocess.TimeoutExpired:
        docker("rm", "-f", name)
        run.add("sigterm", "fail", f"still running {run.stop_timeout:.0f}s after SIGTERM (the "
                "drain time): it would be killed mid-request")  # fmt: skip
        return
    seconds = time.monotonic() - started
    if code == "0":
        run.add("sigterm", "pass", f"exited 0 {seconds:.1f}s after SIGTERM "
                f"(drain time {run.stop_timeout:.0f}s)")  # fmt: skip
    else:
        run.add("sigterm", "fail", f"exited {code} after SIGTERM (want 0: finish in-flight "
                "requests, then exit cleanly)")  # fmt: skip


def check_image(image: str, stop_timeout: float = contract.STOP_TIMEOUT_SECONDS) -> list[Result]:
    """Every clause of the contract, in contract order."""
    from prodstack.local_services import PostgresServer, RedisServer

    inspected = docker("image", "inspect", image)
    if inspected.returncode != 0:
        raise UsageError(f"IMAGE {image}: not on this machine's Docker engine (docker load or "
                         "docker pull it first)")  # fmt: skip
    config = json.loads(inspected.stdout)[0]["Config"]
    progress("starting PostgreSQL and Redis on loopback")
    pg, redis = PostgresServer(), RedisServer()
    env = {"DATABASE_URL": pg.url, "REDIS_URL": redis.url,
           "API_TOKEN": secrets.token_urlsafe(24)}  # fmt: skip
    run = Run(image, env, stop_timeout)
    try:
        check_user(run, config)
        if check_migrate(run):
            check_schema_version(run)
            check_serving(run)
        else:
            run.add("schema-version", "skip", "not checked: migrate failed")
            for clause in ("live", "ready", "read-only root", "sigterm"):
                run.add(clause, "fail", "not checked: migrate failed")
    finally:
        run.close()
        pg.close()
        redis.close()
    order = [c.name for c in contract.CLAUSES]
    return sorted(run.results, key=lambda r: order.index(r.clause))


def render(image: str, results: list[Result], fmt: str) -> str:
    failed = [r.clause for r in results if r.status == "fail"]
    if fmt == "json":
        return json.dumps({"image": image, "ok": not failed,
                           "clauses": [asdict(r) for r in results]}, indent=2)  # fmt: skip
    lines = [f"## check-image {image}", ""]
    lines += [f"- {r.status.upper()} {r.clause}: {r.detail}" for r in results]
    lines += ["", f"{len(failed)} of {len(results)} clauses failed: {', '.join(failed)}"
              if failed else "the image meets the contract (docs/image-contract.md)"]
    return "\n".join(lines)


def cmd_check_image(args: argparse.Namespace) -> int:
    if args.stop_timeout <= 0:
        raise UsageError(f"--stop-timeout {args.stop_timeout}: must be more than 0")
    results = check_image(args.image, args.stop_timeout)
    print(render(args.image, results, args.format))
    return 1 if any(r.status == "fail" for r in results) else 0


def register(sub: Any, subcommand: Any) -> None:
    """Add `check-image` to the CLI (prodstack/cli.py's build_parser)."""
    parser = subcommand(sub, "check-image", "run an image against the image contract",
                        "Run IMAGE against the image contract (docs/image-contract.md) with a "
                        "real PostgreSQL and Redis on loopback: migrate, serve, both health "
                        "paths, /metrics, a read-only root, a non-root user and a clean "
                        "SIGTERM. One line per clause; exit 1 if any fails. Needs root and "
                        "Debian's postgresql and redis-server.", EXAMPLES)  # fmt: skip
    parser.add_argument("image", metavar="IMAGE", help="a local image reference or ID")
    parser.add_argument("--stop-timeout", type=float, default=contract.STOP_TIMEOUT_SECONDS,
                        metavar="SECONDS", help="drain time after SIGTERM (default: the "
                        f"contract's {contract.STOP_TIMEOUT_SECONDS})")  # fmt: skip
    parser.add_argument("--format", choices=("markdown", "json"), default="markdown")
    parser.set_defaults(func=cmd_check_image)
