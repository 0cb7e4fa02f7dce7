"""Run the host tool named by the command: /usr/local/sbin/prodstack-release is a link to
the archive, so argv[0] says which program runs. `python3 prodstack-host.pyz release ...`
(or any command name) names it as the first argument instead."""

from __future__ import annotations

import importlib
import os
import sys

PROGRAMS = {
    "prodstack-release": "release",
    "prodstack-backup": "backup",
    "prodstack-restore": "restore",
    "prodstack-restore-drill": "drill",
    "prodstack-audit": "audit",
}


def program(argv: list[str]) -> tuple[str, list[str]]:
    """The module to run and the argv it sees (argv[0] its command name)."""
    name = os.path.basename(argv[0]) if argv else ""
    if name in PROGRAMS:
        return PROGRAMS[name], argv
    if len(argv) > 1:
        wanted = argv[1] if argv[1] in PROGRAMS else f"prodstack-{argv[1]}"
        if wanted in PROGRAMS:
            return PROGRAMS[wanted], [wanted, *argv[2:]]
    names = ", ".join(PROGRAMS)
    raise SystemExit(f"usage: run as one of {names} (a link to this archive), or pass the "
                     "name as the first argument")  # fmt: skip


def main() -> int | None:
    module, sys.argv = program(sys.argv)
    return importlib.import_module(f"prodstack.host.{module}").main()


if __name__ == "__main__":
    sys.exit(main())
