"""Redis from the distribution: ACL users, private bind, AOF everysec, LRU within a RAM share.

Users: `default` is off; the app's user (REDIS_PASSWORD) has every command but @dangerous
and @admin; the health check's may only PING; the metrics exporter's only reads server
statistics. redis.conf holds only SHA-256 hashes.

A password change is seamless: Redis first accepts the old and the new password
(`cache`), the replicas (service.py) and the exporter (monitoring.py) are switched to the
new one, and only then does Redis drop the old one (`cache_finish`, last in deploy.py),
and only once every web host of the inventory confirmed in this run that its replicas use
the new one (tasks/rotation.py): a run with `--limit`, or one where a web host failed,
leaves both accepted and says which hosts are behind.
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import systemd

from tasks.config import Settings, redis_password_hash
from tasks.facts import MemTotalMb, RedisAuth
from tasks.pki import REDIS_TLS_DIR, upload_ca, upload_server_certificate
from tasks.rotation import clients_on
from tasks.templates import restart_on_change, template, unit_file

# Debian's /etc/redis (redis:redis, setgid): a subdirectory would inherit the setgid bit
# and differ from any mode we set on every run, so the files sit in it directly.
TLS_DIR = REDIS_TLS_DIR


def wanted_users(cfg: Settings) -> dict[str, list[str]]:
    """The password hashes each ACL user ends up with ("default" is off: none)."""
    return {
        "default": [],
        cfg.redis_user: [redis_password_hash(cfg.secrets["REDIS_PASSWORD"])],
        cfg.redis_health_user: [redis_password_hash(cfg.redis_health_password)],
        cfg.redis_monitor_user: [redis_password_hash(cfg.redis_monitor_password)],
    }


def transition_users(cfg: Settings, current: dict[str, list[str]]) -> dict[str, list[str]] | None:
    """While replicas still use an old password: every user accepts old and new (the old
    `requirepass` password as the default user's). None when nothing would change."""
    wanted = wanted_users(cfg)
    old = {user: [h for h in current.get(user, []) if h not in hashes]
           for user, hashes in wanted.items()}  # fmt: skip
    if not any(old.values()):
        return None
    return {user: wanted[user] + old[user] for user in wanted}


def _redis_conf(cfg: Settings, users: dict[str, list[str]], *, name: str, **kwargs):
    maxmemory_mb = max(64, (host.get_fact(MemTotalMb) or 1024) * cfg.redis_memory_percent // 100)
    return template(
        name=name,
        src="redis.j2.conf",
        secret=True,
        dest="/etc/redis/redis.conf",
        mode="640",
        user="redis",
        group="redis",
        cfg=cfg,
        users=users,
        maxmemory_mb=maxmemory_mb,
        tls_dir=TLS_DIR,
        **kwargs,
    )


@deploy("Redis")
def cache(cfg: Settings) -> None:
    tls = []
    if cfg.db_tls:
        tls = upload_server_certificate(
            cfg, directory=TLS_DIR, owner="redis", label="Redis", make_directory=False
        )
        # The local health check's redis-cli verifies the server with it, as the app does.
        upload_ca(cfg, label="local clients verify Redis with it")
    transition = transition_users(cfg, host.get_fact(RedisAuth) or {})
    conf = _redis_conf(
        cfg,
        transition or wanted_users(cfg),
        name="redis.conf: ACL users, bind, appendonly everysec, maxmemory allkeys-lru"
        + (" (old and new passwords while the replicas switch)" if transition else ""),
    )
    unit_file(
        name="Start Redis once its addresses exist",
        src="after-docker.j2.conf",
        dest="/etc/systemd/system/redis-server.service.d/prodstack.conf",
        label="Redis",
        cfg=cfg,
    )
    # Redis 7.0 reads its certificate at start (CONFIG SET could swap it live, but a
    # restart is what a new redis.conf needs anyway).
    restart_on_change(
        "redis-server.service",
        lambda: conf.did_change() or any(op.did_change() for op in tls),
        label="Redis",
    )


@deploy("Redis: old passwords dropped")
def cache_finish(cfg: Settings) -> None:
    """After every web host's replicas use the new password: Redis stops accepting the
    old one. Decided when it runs: until then the old and the new are both accepted."""
    if transition_users(cfg, host.get_fact(RedisAuth) or {}) is None:
        return
    conf = _redis_conf(
        cfg,
        wanted_users(cfg),
        name="redis.conf: only the new passwords (once every web host uses them)",
        _if=clients_on(cfg, "redis", cfg.redis_password_fingerprint, label="Redis"),
    )
    systemd.service(
        name="Restart Redis without the old passwords",
        service="redis-server.service",
        restarted=True,
        _if=conf.did_change,
    )
