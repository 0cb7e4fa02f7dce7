"""Redis from the distribution: requirepass, private bind, AOF everysec, LRU within a RAM share."""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import systemd

from tasks.config import Settings
from tasks.facts import MemTotalMb
from tasks.templates import restart_on_change, template


@deploy("Redis")
def cache(cfg: Settings) -> None:
    maxmemory_mb = max(64, (host.get_fact(MemTotalMb) or 1024) * cfg.redis_memory_percent // 100)
    conf = template(
        name="redis.conf: requirepass, bind, appendonly everysec, maxmemory allkeys-lru",
        src="redis.j2.conf",
        dest="/etc/redis/redis.conf",
        mode="640",
        user="redis",
        group="redis",
        cfg=cfg,
        maxmemory_mb=maxmemory_mb,
    )
    dropin = template(
        name="Start Redis after Docker (it listens on the containers' gateway)",
        src="after-docker.j2.conf",
        dest="/etc/systemd/system/redis-server.service.d/prodstack.conf",
        cfg=cfg,
    )
    systemd.daemon_reload(name="Reload systemd units (Redis)", _if=dropin.did_change)
    restart_on_change("redis-server.service", conf.did_change, label="Redis")
