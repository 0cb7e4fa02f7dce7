"""dockerd starts on a machine imaged after its last dockerd was killed: a pid file that
names no running dockerd is removed, one that names a live dockerd is kept."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from tests.support.docker import clear_stale_pidfile


def test_a_pid_file_naming_a_dead_process_is_removed(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    pidfile = tmp_path / "docker.pid"
    pidfile.write_text(str(dead.pid))
    assert clear_stale_pidfile(pidfile)
    assert not pidfile.exists()


def test_a_pid_file_naming_a_process_that_is_not_dockerd_is_removed(tmp_path):
    pidfile = tmp_path / "docker.pid"
    pidfile.write_text(str(os.getpid()))  # a live python, not dockerd
    assert clear_stale_pidfile(pidfile)
    assert not pidfile.exists()


def test_a_garbled_pid_file_is_removed(tmp_path):
    pidfile = tmp_path / "docker.pid"
    pidfile.write_text("not a pid\n")
    assert clear_stale_pidfile(pidfile)
    assert not pidfile.exists()


def test_a_pid_file_of_a_live_dockerd_is_kept(tmp_path):
    # a process whose comm is "dockerd": a copy of sleep under that name
    fake = tmp_path / "dockerd"
    fake.write_bytes(Path("/bin/sleep").read_bytes())
    fake.chmod(0o755)
    proc = subprocess.Popen([str(fake), "30"])
    comm = Path(f"/proc/{proc.pid}/comm")
    for _ in range(100):  # until the child has exec'd: before that it is still python
        if comm.read_text().strip() == "dockerd":
            break
        time.sleep(0.05)
    try:
        pidfile = tmp_path / "docker.pid"
        pidfile.write_text(str(proc.pid))
        assert not clear_stale_pidfile(pidfile)
        assert pidfile.exists()
    finally:
        proc.kill()
        proc.wait()


def test_no_pid_file_is_nothing_to_do(tmp_path):
    assert not clear_stale_pidfile(tmp_path / "docker.pid")
