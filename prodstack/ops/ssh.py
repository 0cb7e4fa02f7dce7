"""SSH to the VPS hosts exactly as the deploy does: the inventory file (and group_data/) loaded
by pyinfra's own loader, each host connected by pyinfra's SSH connector (its user, port,
key, known-hosts file and host-key policy), then commands run as argument vectors on the
connector's paramiko client. A non-root SSH user runs them through sudo, as the deploy does.
"""

from __future__ import annotations

import queue
import shlex
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prodstack import REPO
from prodstack.errors import UsageError

PYINFRA_DIR = REPO / "pyinfra"
# The deploy's own scripts on the hosts (pyinfra/files/, installed by tasks/api.py and
# tasks/audit.py).
RELEASE = "/usr/local/sbin/prodstack-release"
AUDIT = "/usr/local/sbin/prodstack-audit"


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str


@dataclass
class Remote:
    """One connected host of the inventory."""

    name: str
    groups: set[str]
    host: Any  # pyinfra.api.Host, connected
    sudo: bool

    @property
    def client(self):
        return self.host.connector.client

    def command(self, argv: list[str]) -> str:
        """The one string SSH carries: every argument quoted, sudo when the deploy uses it."""
        return shlex.join(["sudo", "-n", "--", *argv] if self.sudo else argv)

    def run(self, argv: list[str], *, timeout: float = 120) -> Result:
        channel = self.client.get_transport().open_session()
        channel.settimeout(timeout)
        channel.exec_command(self.command(argv))
        channel.shutdown_write()
        out, err = bytearray(), bytearray()
        deadline = time.monotonic() + timeout
        while True:
            if channel.recv_ready():
                out += channel.recv(65536)
            elif channel.recv_stderr_ready():
                err += channel.recv_stderr(65536)
            elif channel.exit_status_ready() and not channel.recv_ready() \
                    and not channel.recv_stderr_ready():  # fmt: skip
                break
            elif time.monotonic() > deadline:
                channel.close()
                raise UsageError(f"{self.name}: `{shlex.join(argv)}` took over {timeout:.0f}s")
            else:
                time.sleep(0.01)
        code = channel.recv_exit_status()
        channel.close()
        return Result(code, out.decode(errors="replace"), err.decode(errors="replace"))

    def check(self, argv: list[str], *, timeout: float = 120) -> str:
        result = self.run(argv, timeout=timeout)
        if result.code != 0:
            detail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
            raise HostError(f"{self.name}: `{shlex.join(argv)}` exited {result.code}: {detail[0]}")
        return result.stdout

    def lines(self, argv: list[str]) -> tuple[Any, Iterator[str]]:
        """Start `argv` and iterate its output lines (stdout and stderr) as they come."""
        channel = self.client.get_transport().open_session()
        channel.set_combine_stderr(True)
        channel.exec_command(self.command(argv))
        channel.shutdown_write()

        def iterate() -> Iterator[str]:
            buffer = b""
            while True:
                chunk = channel.recv(65536)
                if not chunk:
                    break
                buffer += chunk
                *complete, buffer = buffer.split(b"\n")
                for line in complete:
                    yield line.decode(errors="replace")
            if buffer:
                yield buffer.decode(errors="replace")

        return channel, iterate()

    @property
    def is_web(self) -> bool:
        return "web" in self.groups

    @property
    def is_db(self) -> bool:
        return "db" in self.groups


class HostError(Exception):
    """A command on a host failed: the verb reports it (exit 1), not a usage error."""


def connect(inventory_file: Path, *, only: str | None = None) -> list[Remote]:
    """Every host of the inventory (or the one named `only`), connected, in inventory order."""
    from pyinfra.api import Config, State
    from pyinfra.api.exceptions import ConnectError
    from pyinfra.context import ctx_state

    from prodstack.vps_plan import _pyinfra_cli

    path = Path(inventory_file)
    if not path.is_file():
        raise UsageError(f"-i {inventory_file}: no such inventory file")
    # As pyinfra's CLI: the state exists first, the inventory and group data files run with
    # it in context, and the state is initialised with the inventory.
    state = State()
    try:
        with ctx_state.use(state):
            inventory = _pyinfra_cli("inventory").make_inventory_from_files(
                str(path.resolve()), cwd=str(PYINFRA_DIR)
            )
    except SystemExit as error:  # inventory.py's own message, e.g. PRODSTACK_HOST unset
        raise UsageError(f"-i {inventory_file}: {error}") from None
    hosts = [h for h in inventory if only in (None, h.name)]
    if not hosts:
        names = ", ".join(h.name for h in inventory) or "none"
        raise UsageError(f"--host {only}: not in {inventory_file} (hosts: {names})")
    config = Config()
    config.CONNECT_TIMEOUT = 10
    state.init(inventory, config)
    remotes = []
    for host in hosts:
        try:
            host.connect(show_errors=False, raise_exceptions=True)
        except ConnectError as error:
            raise UsageError(f"{host.name}: cannot connect over SSH: {error}") from None
        sudo = bool(host.data.get("_sudo")) or (host.data.get("ssh_user") or "root") != "root"
        remotes.append(Remote(host.name, set(host.groups), host, sudo))
    return remotes


def web_hosts(remotes: list[Remote]) -> list[Remote]:
    return [r for r in remotes if r.is_web]


def merged(streams: list[tuple[str, Any, Iterator[str]]]) -> Iterator[tuple[str, str]]:
    """Lines from several running commands as they arrive, each with its prefix; ends when
    all of them have ended."""
    lines: queue.Queue = queue.Queue()

    def pump(prefix: str, it: Iterator[str]) -> None:
        try:
            for line in it:
                lines.put((prefix, line))
        finally:
            lines.put((prefix, None))

    for prefix, _channel, it in streams:
        threading.Thread(target=pump, args=(prefix, it), daemon=True).start()
    open_streams = len(streams)
    while open_streams:
        prefix, line = lines.get()
        if line is None:
            open_streams -= 1
        else:
            yield prefix, line
