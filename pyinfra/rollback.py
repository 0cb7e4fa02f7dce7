"""Roll the API back: `uv run pyinfra inventory.py rollback.py [--data rollback_to=VERSION]`
(or `prodstack rollback --profile vps -i inventory.py [--to VERSION]`).

Runs `prodstack-release rollback` on each web host, one host at a time. Without
`rollback_to` it undoes the last deploy: back to the release that served before it, and a
second run stays there. With `rollback_to` it goes to any release the host still keeps
(`keep_releases`; `prodstack-release history` lists them). A rollback runs no migration,
and is refused when the target release is older than the database's schema.

During a blue/green bake it points nginx back at the old set at once (still running,
already warm). Otherwise it deploys the target image with the configured strategy,
health-gated as a deploy. Then pin `image` to the version you rolled back to, or fix
forward: the next deploy says which version it replaces with which.
"""

import re
import shlex

from pyinfra import host
from pyinfra.operations import server

from tasks.api import operator
from tasks.audit import refuse_if_locked
from tasks.config import fail

RELEASE = "/usr/local/sbin/prodstack-release"
# A version (image tag), an image reference or a digest; never anything a shell reads.
VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@/-]{0,199}$")

refuse_if_locked()
to = host.data.get("rollback_to") or None
if to is not None and not VERSION.match(str(to)):
    raise fail("rollback_to", to, "a version (the image tag), an image reference or a "
               "digest such as sha256:1a2b3c4d5e6f; `prodstack-release history` lists them")

if "web" in host.groups:
    server.shell(
        name=f"Roll back to {to or 'the release before the last deploy'} (always runs: it "
        "is the requested action)",
        commands=[f"{RELEASE} rollback" + (f" --to {shlex.quote(str(to))}" if to else ""),
                  f"{RELEASE} status"],
        _env={"PRODSTACK_DEPLOY_BY": operator()},
        _serial=True,
    )  # fmt: skip
