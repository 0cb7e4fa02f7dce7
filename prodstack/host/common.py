"""What the host tools share: where they live on the host, the backup settings they read,
atomic writes, commands run as the postgres user, and UTC timestamps.

Stdlib only: the host runs these with Debian 12's /usr/bin/python3 and nothing else."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from collections.abc import Iterator
from typing import IO, Any

# Every command name is a link to the one archive (prodstack.host.zipapp builds it).
SBIN = "/usr/local/sbin"
BACKUP_CONFIG = "/etc/prodstack/backup.json"


def command(name: str) -> str:
    """The path of a host tool on the host: `command("prodstack-backup")`."""
    return os.path.join(SBIN, name)


def say(prog: str, message: str) -> None:
    """One progress line, prefixed with the tool's name, flushed (the journal reads it)."""
    print(f"{prog}: {message}", flush=True)


def load_json(path: str) -> Any:
    with open(path) as f:
        return json.load(f)


def utc_stamp(seconds: float | None = None) -> str:
    """`2026-12-07T06:30:00Z`: now, or the given epoch seconds."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def as_postgres(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[Any]:
    """Run a command as the postgres user (pgbackrest, psql, pg_ctl)."""
    return subprocess.run(["runuser", "-u", "postgres", "--", *args], **kwargs)


@contextlib.contextmanager
def replacing(path: str, mode: int = 0o644, *, binary: bool = False) -> Iterator[IO[Any]]:
    """A new file that takes `path`'s place whole, synced, when the block ends without an
    error; otherwise nothing of it remains. A reader never sees half of it."""
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "wb" if binary else "w") as f:
            os.fchmod(f.fileno(), mode)
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_atomically(path: str, text: str, mode: int = 0o644) -> None:
    """Write a whole file or nothing: a reader never sees half of it, a crash leaves no part."""
    with replacing(path, mode) as f:
        f.write(text)
