"""Redis from the distribution: requirepass, private bind, AOF everysec, LRU within a RAM share."""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import systemd

from tasks.config import Settings
from tasks.facts import MemTotalMb
from tasks.pki import upload_ca, upload_server_certificate
from tasks.templates import restart_on_change, template

# Debian's /etc/redis (redis:redis, setgid): a subdirectory would inherit the setgid bit
# and differ from any mode we set on every run, so the files sit in it directly.
TLS_DIR = "/etc/redis"


@deploy("Redis")
def cache(cfg: Settings) -> None:
    maxmemory_mb = max(64, (host.get_fact(MemTotalMb) or 1024) * cfg.redis_memory_percent // 100)
    tls = []
    if cfg.db_tls:
        tls = upload_server_certificate(
            cfg, directory=TLS_DIR, owner="redis", label="Redis", make_directory=False
        )
        # The local health check's redis-cli verifies the server with it, as the app does.
        upload_ca(cfg, label="local clients verify Redis with it")
    conf = template(
        name="redis.conf: requirepass, bind, appendonly everysec, maxmemory allkeys-lru",
        src="redis.j2.conf",
        secret=True,
        dest="/etc/redis/redis.conf",
        mode="640",
        user="redis",
        group="redis",
        cfg=cfg,
        maxmemory_mb=maxmemory_mb,
        tls_dir=TLS_DIR,
    )
    dropin = template(
        name="Start Redis after Docker (it listens on the containers' gateway)",
        src="after-docker.j2.conf",
        dest="/etc/systemd/system/redis-server.service.d/prodstack.conf",
        cfg=cfg,
    )
    systemd.daemon_reload(name="Reload systemd units (Redis)", _if=dropin.did_change)
    # Redis 7.0 reads its certificate at start (CONFIG SET could swap it live, but a
    # restart is what a new redis.conf needs anyway).
    restart_on_change(
        "redis-server.service",
        lambda: conf.did_change() or any(op.did_change() for op in tls),
        label="Redis",
    )
