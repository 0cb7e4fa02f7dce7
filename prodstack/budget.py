"""PostgreSQL connections at the worst moment of a deploy, against what the server allows:
the one formula both targets enforce and `prodstack choose` reports.

    peak = replicas alive during a deploy x connections per replica + direct clients

Each target says how many replicas are alive at that moment and which clients connect
directly: the cloud's ECS deployment runs up to twice the autoscaling ceiling (rolling at
200 %, or a whole green set) plus the migrate task (stacks/config.py); a VPS web host runs
one replica more (rolling) or a second set (blue_green), plus its migrate run, and the db
host its own clients (:func:`vps_budget`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from app.core.config import INT_SETTINGS

# What each replica may open when nothing overrides it: the app's defaults.
APP_DB_POOL_MAX = INT_SETTINGS["DB_POOL_MAX"][0]
APP_WEB_CONCURRENCY = INT_SETTINGS["WEB_CONCURRENCY"][0]
# PostgreSQL keeps superuser_reserved_connections (its default, 3) for superusers.
VPS_RESERVED_CONNECTIONS = 3
# The db host's own clients at once: the postgres exporter, the health check, a backup.
VPS_HOST_DB_CLIENTS = 3


def peak(*, alive_replicas: int, per_replica: int, direct: int) -> int:
    """The most connections open at once: every live replica's pool full, plus the
    clients that log in directly."""
    return alive_replicas * per_replica + direct


def vps_alive(replicas: int, strategy: str) -> int:
    """Replicas of one web host alive during its deploy."""
    return replicas * 2 if strategy == "blue_green" else replicas + 1


def vps_budget(web_hosts: Sequence[tuple[int, str]], max_connections: int) -> dict[str, Any]:
    """The VPS deploy's budget. Per web host, (replicas, deploy_strategy); every web host
    may deploy at the same moment, each with its migrate run."""
    alive = sum(vps_alive(r, strategy) for r, strategy in web_hosts)
    per_replica = APP_DB_POOL_MAX * APP_WEB_CONCURRENCY
    most = peak(alive_replicas=alive, per_replica=per_replica,
                direct=len(web_hosts) + VPS_HOST_DB_CLIENTS)  # fmt: skip
    available = max_connections - VPS_RESERVED_CONNECTIONS
    return {"peak": most, "available": available, "ok": most <= available,
            "alive_replicas": alive, "per_replica": per_replica, "fix": (
        f"room for {most} connections = {alive} replicas alive during a deploy "
        f"({', '.join(f'{r} {s}' for r, s in web_hosts)}) x {per_replica} (DB_POOL_MAX "
        f"{APP_DB_POOL_MAX} x WEB_CONCURRENCY {APP_WEB_CONCURRENCY}) + {len(web_hosts)} "
        f"migrate + {VPS_HOST_DB_CLIENTS} host clients, but max_connections {max_connections} - "
        f"{VPS_RESERVED_CONNECTIONS} reserved leaves {available}: raise "
        "postgres_max_connections, lower replicas, or deploy rolling"
    )}  # fmt: skip
