"""SIGTERM drains: in-flight requests finish, new connections are refused, the process exits."""

from __future__ import annotations

import subprocess
import threading
import time

import httpx

from tests.support.app_server import AppServer, app_env


def test_in_flight_request_completes_across_sigterm(migrated, redis_server, clean):
    srv = AppServer(app_env(migrated.url, redis_server.url, RATE_LIMIT_PER_MINUTE="1000"))
    srv.start("/health/ready")
    # Hold a lock that the list query must wait for, so the request is in flight for ~3 s.
    locker = subprocess.Popen(
        ["psql", migrated.url, "-c",
         "BEGIN; LOCK TABLE alerts IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(3); COMMIT;"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    result: dict = {}

    def slow_request():
        try:
            result["response"] = httpx.get(srv.url + "/api/v1/alerts?limit=7", timeout=20)
        except httpx.HTTPError as exc:
            result["error"] = exc

    try:
        time.sleep(0.7)
        worker = threading.Thread(target=slow_request)
        worker.start()
        time.sleep(0.7)
        assert "response" not in result  # still waiting on the lock
        srv.proc.send_signal(15)
        time.sleep(0.5)
        # Draining: no new connections are accepted.
        try:
            httpx.get(srv.url + "/health/live", timeout=2)
            refused = False
        except httpx.ConnectError:
            refused = True
        assert refused
        worker.join(20)
        assert "error" not in result, result
        assert result["response"].status_code == 200
        # uvicorn re-raises the signal once drained, so the exit is "terminated by SIGTERM",
        # which systemd and ECS both treat as a clean stop.
        assert srv.proc.wait(20) in (0, -15)
        assert "Application shutdown complete" in srv.logs()
    finally:
        locker.wait(10)
        srv.stop()
