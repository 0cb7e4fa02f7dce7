"""Build the host tools' archive: prodstack/host/ as one executable zipapp.

`python -m prodstack.host_archive OUT` writes it. The deploy uploads it once to
/usr/local/lib/prodstack/prodstack-host.pyz and links every command name to it
(pyinfra/tasks/host_tools.py).

The archive is the same bytes for the same sources on any machine: entries sorted, a fixed
timestamp and mode on each, stored uncompressed (zlib's output is not the same on every
build of it). A second deploy then changes nothing, and the VPS plan stays stable.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import io
import sys
import tempfile
import zipfile
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent / "host"
INTERPRETER = "/usr/bin/python3"
NAME = "prodstack-host.pyz"
# zip's epoch: the earliest time a zip entry can hold.
STAMP = (1980, 1, 1, 0, 0, 0)
# The archive holds prodstack.host only; its parent package is this stub, not the CLI's.
STUB = '"""prodstack\'s host tools; this archive holds only prodstack.host."""\n'
MAIN = "import sys\n\nfrom prodstack.host.__main__ import main\n\nsys.exit(main())\n"


def sources(package: Path = PACKAGE) -> dict[str, bytes]:
    """The archive's entries: name inside the archive, content."""
    entries = {"__main__.py": MAIN.encode(), "prodstack/__init__.py": STUB.encode()}
    for path in sorted(package.glob("*.py")):
        entries[f"prodstack/host/{path.name}"] = path.read_bytes()
    return entries


def archive(package: Path = PACKAGE) -> bytes:
    """The zipapp's bytes: a shebang line, then a zip of the sources."""
    buffer = io.BytesIO()
    buffer.write(f"#!{INTERPRETER}\n".encode())
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, content in sorted(sources(package).items()):
            info = zipfile.ZipInfo(name, date_time=STAMP)
            info.external_attr = 0o644 << 16
            info.create_system = 3  # Unix, whatever the building machine is
            zf.writestr(info, content)
    return buffer.getvalue()


def write(path: Path, package: Path = PACKAGE) -> Path:
    """Write the archive to `path` (0755), replacing it whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(archive(package))
    tmp.chmod(0o755)
    tmp.replace(path)
    return path


@functools.cache
def built() -> Path:
    """This checkout's archive, built once per process into a directory named by its
    digest (what pyinfra uploads; the file name is what the plan shows)."""
    content = archive()
    digest = hashlib.sha256(content).hexdigest()[:16]
    folder = Path(tempfile.gettempdir()) / f"prodstack-host-{digest}"
    path = folder / NAME
    if not path.is_file() or path.read_bytes() != content:
        write(path)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m prodstack.host_archive",
        description="Write the host tools' zipapp (prodstack/host/) to OUT.",
        epilog="example: python -m prodstack.host_archive /tmp/prodstack-host.pyz",
    )
    parser.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    print(write(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
