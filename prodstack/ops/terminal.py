"""`exec -i`: the local terminal joined to a remote pseudo-terminal on the SSH channel."""

from __future__ import annotations

import os
import select
import shutil
import sys
from typing import Any


def interactive_session(remote: Any, argv: list[str]) -> int:
    """Run `argv` on `remote` with a pty, the local terminal in raw mode meanwhile; returns
    the remote exit code. Without a local terminal, stdin is passed through as it is."""
    channel = remote.client.get_transport().open_session()
    tty = sys.stdin.isatty()
    if tty:
        size = shutil.get_terminal_size()
        channel.get_pty(term=os.environ.get("TERM", "xterm"), width=size.columns,
                        height=size.lines)  # fmt: skip
    channel.exec_command(remote.command(argv))
    saved = None
    if tty:
        import termios
        import tty as ttymod

        saved = termios.tcgetattr(sys.stdin)
        ttymod.setraw(sys.stdin.fileno())
    stdin_open = True
    try:
        while True:
            watched = [channel] + ([sys.stdin] if stdin_open else [])
            readable, _, _ = select.select(watched, [], [], 0.2)
            if channel in readable or channel.recv_ready():
                data = channel.recv(65536)
                if not data and channel.exit_status_ready():
                    break
                os.write(sys.stdout.fileno(), data)
            if channel.recv_stderr_ready():
                os.write(sys.stderr.fileno(), channel.recv_stderr(65536))
            if stdin_open and sys.stdin in readable:
                data = os.read(sys.stdin.fileno(), 4096)
                if data:
                    channel.sendall(data)
                else:
                    stdin_open = False
                    channel.shutdown_write()
            if channel.exit_status_ready() and not channel.recv_ready():
                break
    finally:
        if saved is not None:
            import termios

            termios.tcsetattr(sys.stdin, termios.TCSADRAIN, saved)
    return channel.recv_exit_status()
