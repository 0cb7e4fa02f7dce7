"""Password quality (libpam-pwquality): the accounts log in with keys and have no
passwords, but a password set on the host later (a sudo user's, say) must be a strong one.
Debian's package adds the module to common-password itself."""

from __future__ import annotations

from pyinfra.api import deploy

from tasks.config import Settings
from tasks.templates import template

# Installed with the base packages, in their one apt transaction (tasks/base.py).
# cracklib-runtime: the dictionary pam_pwquality checks against (only recommended, so left
# out by --no-install-recommends; without it every password fails "error loading dictionary").
PACKAGES = ["libpam-pwquality", "cracklib-runtime"]
# CIS Debian 12 5.3.3.2: at least 14 characters, from at least 4 character classes.
PWQUALITY = {"minlen": 14, "minclass": 4, "maxrepeat": 3, "enforce_for_root": None}


@deploy("Password quality")
def pwquality(cfg: Settings) -> None:
    template(name="Password quality rules", src="pwquality.j2.conf",
             dest="/etc/security/pwquality.conf.d/prodstack.conf", rules=PWQUALITY)  # fmt: skip
