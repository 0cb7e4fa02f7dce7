"""The host tools (prodstack/host/): one archive, and a link per command name.

prodstack-release, prodstack-backup, prodstack-restore, prodstack-restore-drill and
prodstack-audit are one zipapp, built from this checkout (prodstack/host_archive.py) and
uploaded to ARCHIVE; each command in /usr/local/sbin links to it and the archive runs the
program its name says. A host gets the links of its roles. An older host's separate
script at a command's path is replaced by the link.
"""

from __future__ import annotations

from prodstack import host_archive
from pyinfra.api import deploy
from pyinfra.operations import files

ARCHIVE = "/usr/local/lib/prodstack/" + host_archive.NAME
SBIN = "/usr/local/sbin"
EVERY_HOST = ("prodstack-audit",)
WEB = ("prodstack-release",)
DB = ("prodstack-backup", "prodstack-restore", "prodstack-restore-drill")


def commands(cfg) -> tuple[str, ...]:
    """The command names this host's roles use."""
    return EVERY_HOST + (WEB if cfg.is_web else ()) + (DB if cfg.is_db else ())


@deploy("Host tools")
def host_tools(cfg) -> None:
    files.put(name=f"Host tools ({', '.join(commands(cfg))}): one archive",
              src=str(host_archive.built()), dest=ARCHIVE, mode="755", user="root",
              group="root")  # fmt: skip
    for name in commands(cfg):
        files.link(name=f"{name} (the host tools' archive)", path=f"{SBIN}/{name}",
                   target=ARCHIVE, force=True, force_backup=False)  # fmt: skip
