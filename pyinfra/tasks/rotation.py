"""Password rotation across hosts: the db host drops an old password (Redis's, or
PostgreSQL's old login role) only once every web host of the inventory confirmed, in this
run, that its replicas run on the new one.

A web host confirms after its rollout (`confirm`, from service.py): it writes the one-way
fingerprint of each password its replicas use to CREDENTIALS_FILE, and the run remembers
that it did. The db host's last steps (`clients_on`, for redis.py's `cache_finish` and
postgres.py's `database_finish`) are decided when they execute, after every web host's
rollout: a web host left out with `--limit`, one that failed before confirming, or one that
confirmed another fingerprint (other secrets) may still use the old password, so the old
one stays accepted and the deploy names those hosts in a warning. The next run over
every web host finishes it.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Mapping

from pyinfra import host, inventory, logger

from tasks.config import Settings
from tasks.templates import template

CREDENTIALS_FILE = "/var/lib/prodstack/credentials.json"
# Per pyinfra run (its State): {web host name: (fingerprints, [confirmed?], operation)}.
# tasks/ modules load once per process, deploy.py runs once per host.
_CONFIRMATIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def fingerprints(cfg: Settings) -> dict[str, str]:
    """What a web host's replicas use, by password: one-way fingerprints only (PostgreSQL's
    with the login role, tasks/postgres.py)."""
    return {"redis": cfg.redis_password_fingerprint, "postgres": cfg.postgres_generation}


def confirm(cfg: Settings, *, after: Callable[[], bool]):
    """On a web host, after its rollout: record which passwords its replicas now use.

    `after` is the rollout's own condition: when it skipped the rollout (another web host
    failed), the replicas did not switch, and nothing is confirmed."""
    ran = [False]

    def switched() -> bool:
        ran[0] = after()
        return ran[0]

    op = template(
        name="Record which password generation the replicas use (fingerprints)",
        src="credentials.j2.json",
        dest=CREDENTIALS_FILE,
        mode="644",
        prints=fingerprints(cfg),
        _if=switched,
    )
    _CONFIRMATIONS.setdefault(host.state, {})[host.name] = (fingerprints(cfg), ran, op)
    return op


def confirmed(state) -> dict[str, dict[str, str]]:
    """The web hosts that confirmed in this run, and the fingerprints they confirmed."""
    return {
        name: prints
        for name, (prints, ran, op) in _CONFIRMATIONS.get(state, {}).items()
        if ran[0] and op.is_complete() and op.did_succeed()
    }


def still_on_old(
    web_hosts: Iterable[str], confirmations: Mapping[str, Mapping[str, str]], kind: str,
    wanted: str,
) -> list[str]:  # fmt: skip
    """The web hosts that may still use an old `kind` password: every one that did not
    confirm `wanted` in this run."""
    return [name for name in web_hosts if confirmations.get(name, {}).get(kind) != wanted]


def web_host_names(cfg: Settings) -> list[str]:
    """Every web host of the inventory, in this run or not (`--limit` leaves them in it)."""
    group = inventory.get_group("web", None) or ([host] if cfg.is_web else [])
    return [web.name for web in group]


def clients_on(cfg: Settings, kind: str, wanted: str, *, label: str) -> Callable[[], bool]:
    """For the db host's last step: a condition, checked when it executes, that every web
    host confirmed `wanted`; else it warns, naming the hosts still on an old password."""
    state = host.state
    web = web_host_names(cfg)

    def check() -> bool:
        pending = still_on_old(web, confirmed(state), kind, wanted)
        if pending:
            logger.warning(
                f"prodstack: {label} still accepts the old password: web host(s) "
                f"{', '.join(pending)} did not confirm the new one in this run (left out "
                "with --limit, failed, or on other secrets). A run over every web host "
                "drops it (docs/vps.md, Rotating a password)."
            )
        return not pending

    return check
