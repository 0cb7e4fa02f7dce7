"""Throwaway PostgreSQL and Redis servers from the Debian packages, on loopback: what
`prodstack check-image` runs an image against, and what the tests use.

Each runs from its own temporary data directory on a free port, can be stopped and
started again on the same port (for the failure tests), and is removed at the end.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def tls_files(cert: Path, key: Path, owner: str) -> Path:
    """A fresh directory with server.crt and server.key owned by ``owner``: PostgreSQL
    and Redis refuse a key that others can read or that another user owns."""
    tls = Path(tempfile.mkdtemp(prefix="prodstack-tls-"))
    user = pwd.getpwnam(owner)
    for src, name, mode in ((cert, "server.crt", 0o644), (key, "server.key", 0o600)):
        shutil.copy(src, tls / name)
        os.chmod(tls / name, mode)
        os.chown(tls / name, user.pw_uid, user.pw_gid)
    os.chown(tls, user.pw_uid, user.pw_gid)
    return tls


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 30.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s")


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise RuntimeError("PostgreSQL server binaries not found: install postgresql")
    return found[-1]


class PostgresServer:
    """PostgreSQL as the `postgres` OS user (it refuses to run as root)."""

    user = "prodstack"
    password = "test-password-pg"
    database = "prodstack"

    def __init__(self) -> None:
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="prodstack-pg-"))
        self.data = self.root / "data"
        owner = pwd.getpwnam("postgres")
        os.chown(self.root, owner.pw_uid, owner.pw_gid)
        pwfile = self.root / "pw"
        pwfile.write_text(self.password)
        os.chown(pwfile, owner.pw_uid, owner.pw_gid)
        self._as_postgres(
            _pg_bin("initdb"), "-D", str(self.data), "-U", self.user, "--auth=scram-sha-256",
            f"--pwfile={pwfile}", "-E", "UTF8", "--no-sync",
        )
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(
                f"listen_addresses = '127.0.0.1'\nport = {self.port}\n"
                f"unix_socket_directories = '{self.root}'\nfsync = off\n"
                "synchronous_commit = off\nfull_page_writes = off\nmax_connections = 200\n"
            )
        self.start()
        self.psql(f"CREATE DATABASE {self.database}", database="postgres")

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}:{self.password}@127.0.0.1:{self.port}/{self.database}"

    def _as_postgres(self, *cmd: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["runuser", "-u", "postgres", "--", *cmd], check=True, capture_output=True, text=True
        )

    def start(self) -> None:
        self._as_postgres(
            _pg_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.root / "log"), "-w", "start"
        )
        wait_for_port(self.port)

    def stop(self) -> None:
        self._as_postgres(_pg_bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def psql(self, sql: str, database: str | None = None) -> str:
        """Run one statement as the owner; returns unaligned, tuples-only output."""
        env = {**os.environ, "PGPASSWORD": self.password}
        out = subprocess.run(
            ["psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user, "-d",
             database or self.database, "-v", "ON_ERROR_STOP=1", "-Atc", sql],
            check=True, capture_output=True, text=True, env=env,
        )
        return out.stdout.strip()

    def fresh_database(self, name: str) -> str:
        """Create (or re-create) an empty database beside the main one; returns its URL."""
        self.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", database="postgres")
        self.psql(f"CREATE DATABASE {name}", database="postgres")
        return f"postgresql://{self.user}:{self.password}@127.0.0.1:{self.port}/{name}"

    def enable_tls(self, tls: Path) -> None:
        """Restart speaking TLS only over TCP, with ``tls``'s server.crt and server.key
        (see ``tls_files``); the local socket stays open for ``psql``-free set-up."""
        self.stop()
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(f"ssl = on\nssl_cert_file = '{tls}/server.crt'\n"
                       f"ssl_key_file = '{tls}/server.key'\n")
        (self.data / "pg_hba.conf").write_text(
            "local all all trust\nhostssl all all 127.0.0.1/32 scram-sha-256\n"
        )
        self.start()

    def close(self) -> None:
        try:
            self.stop()
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.root, ignore_errors=True)


class RedisServer:
    password = "test-password-redis"

    def __init__(self) -> None:
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="prodstack-redis-"))
        self.proc: subprocess.Popen | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port),
             "--dir", str(self.root), "--save", "", "--appendonly", "no",
             "--requirepass", self.password, "--protected-mode", "yes"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None

    def cli(self, *args: str) -> str:
        out = subprocess.run(
            ["redis-cli", "-p", str(self.port), "--no-auth-warning", "-a", self.password, *args],
            check=True, capture_output=True, text=True,
        )
        return out.stdout.strip()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
