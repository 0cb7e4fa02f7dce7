"""Every host's audit log and the deploy lock's check, read before the deploy changes anything.

prodstack-audit (prodstack/host/audit.py) appends one JSON line per operator action to
/var/log/prodstack/audit.log; prodstack-release records deploys, rollbacks, lock events and
execs through it, and this deploy records a config push when it changed something. The
deploy lock itself lives with prodstack-release on the web hosts (`lock acquire`).
"""

from __future__ import annotations

import getpass
import os
import shlex
import socket

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.api.exceptions import DeployError
from pyinfra.context import ctx_host
from pyinfra.operations import files, server

# Light imports only: deploy.py checks the lock before it imports the other tasks.
from tasks.facts import DeployLock
from tasks.host_tools import host_tools
from tasks.templates import template

AUDIT = "/usr/local/sbin/prodstack-audit"


def operator() -> str:
    """Who deploys: user@machine of the one running pyinfra or the prodstack CLI, unless
    PRODSTACK_OPERATOR names them (a shared CI account, say)."""
    return os.environ.get("PRODSTACK_OPERATOR") or f"{getpass.getuser()}@{socket.gethostname()}"


def refuse_if_locked() -> None:
    """Stop before any change when someone else holds this host's deploy lock: the error
    names the holder and the message. A deploy never waits on the lock."""
    held = host.get_fact(DeployLock)
    if held and held.get("by") != operator():
        raise DeployError(
            f"{host.name}: deploy lock held by {held.get('by')} since {held.get('since_utc')}: "
            f"{held.get('message')!r}. Nothing was changed; ask them, or run `prodstack lock "
            "release` once their work is done."
        )


@deploy("Audit log")
def audit_log(cfg) -> None:
    files.directory(name="Audit log directory (root, group adm reads)", path="/var/log/prodstack",
                    user="root", group="adm", mode="750")  # fmt: skip
    host_tools(cfg)
    template(name="logrotate for the audit log", src="logrotate-audit.j2.conf",
             dest="/etc/logrotate.d/prodstack-audit", cfg=cfg)  # fmt: skip


def record_config_push() -> None:
    """The last operation: a config-push record, only when this run changed the host (so a
    converged host's second run stays unchanged)."""
    # This host itself, not the context proxy: `_if` may be evaluated outside the host's
    # context (pyinfra runs it in the host's context; prodstack plan does not).
    this = ctx_host.get()
    earlier = list(this.op_hash_order)
    ops = this.state.ops[this]

    def changed() -> bool:
        metas = (ops.get(op_hash) for op_hash in earlier)
        return any(meta and meta.operation_meta.is_complete()
                   and meta.operation_meta.did_change() for meta in metas)  # fmt: skip

    server.shell(
        name="Audit: record this config push (only when something changed)",
        commands=[shlex.join([AUDIT, "record", "--by", operator(), "config-push"])],
        _if=changed,
    )
