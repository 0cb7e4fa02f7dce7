"""Run the real API (`python -m app serve`) as a subprocess, as a deploy would."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from prodstack.local_services import free_port

REPO = Path(__file__).resolve().parents[2]
TEST_TOKEN = "test-token-0123456789abcdef"


def app_env(database_url: str, redis_url: str, **overrides: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DATABASE_", "REDIS_", "DB_", "API_", "RATE_", "PROMETHEUS_"))
    }
    env.update(
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        API_TOKEN=TEST_TOKEN,
        LOG_LEVEL="INFO",
        PYTHONPATH=str(REPO),
    )
    env.update(overrides)
    return env


def run_app(command: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "app", command],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


class AppServer:
    def __init__(self, env: dict[str, str]) -> None:
        self.port = free_port()
        self.env = {**env, "PORT": str(self.port), "HOST": "127.0.0.1"}
        self.log_path = Path(tempfile.mkstemp(prefix="prodstack-app-", suffix=".log")[1])
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, **kwargs) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=10, **kwargs)

    def start(self, wait: str = "/health/live") -> AppServer:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "app", "serve"],
                env=self.env,
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.wait_for(wait)
        return self

    def wait_for(self, path: str, status: int = 200, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"app exited {self.proc.returncode}:\n{self.logs()}")
            try:
                last = httpx.get(self.url + path, timeout=2).status_code
                if last == status:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"{path} never answered {status} (last {last}):\n{self.logs()}")

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def terminate(self) -> int:
        """SIGTERM, as ECS and systemd send, then wait for the process to exit."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(30)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log_path.unlink(missing_ok=True)
