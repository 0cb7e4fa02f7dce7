"""Process accounting (acct): the kernel records every process that ends, with its user,
command and times, in /var/log/account/pacct; `lastcomm` and `sa` read it. Debian's
package rotates the file daily and keeps a month."""

from __future__ import annotations

from pyinfra.api import deploy
from pyinfra.operations import systemd

from tasks.config import Settings

# Installed with the base packages, in their one apt transaction (tasks/base.py).
PACKAGES = ["acct"]


@deploy("Process accounting")
def acct(cfg: Settings) -> None:
    systemd.service(name="Process accounting on (acct.service)", service="acct.service",
                    running=True, enabled=True)  # fmt: skip
