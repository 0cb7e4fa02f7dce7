"""ufw: deny incoming except 22, 80 and 443 (plus PostgreSQL/Redis from the containers)."""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import server

from tasks.config import Settings
from tasks.facts import UfwStatus


def wanted_rules(cfg: Settings) -> list[tuple[str, str]]:
    """(ufw command args, the line `ufw status verbose` prints for it)."""
    rules = [
        ("allow 22/tcp", "22/tcp ALLOW IN Anywhere"),
        ("allow 80/tcp", "80/tcp ALLOW IN Anywhere"),
        ("allow 443/tcp", "443/tcp ALLOW IN Anywhere"),
    ]
    if cfg.is_db:
        for cidr in cfg.db_client_cidrs:
            for port in (cfg.postgres_port, cfg.redis_port):
                rules.append(
                    (
                        f"allow proto tcp from {cidr} to any port {port}",
                        f"{port}/tcp ALLOW IN {cidr}",
                    )
                )
    return rules


@deploy("Firewall")
def firewall(cfg: Settings) -> None:
    # pyinfra has no ufw operation: compare `ufw status verbose` with the wanted rules
    # and run ufw only for what differs, so a converged host runs nothing.
    status = host.get_fact(UfwStatus) or {"active": False, "defaults": "", "rules": []}
    commands = []
    if "deny (incoming)" not in status["defaults"]:
        commands.append("ufw default deny incoming")
    if "allow (outgoing)" not in status["defaults"]:
        commands.append("ufw default allow outgoing")
    # Routed traffic is Docker's (published ports are on 127.0.0.1 only, see service.py).
    for args, line in wanted_rules(cfg):
        if line not in status["rules"]:
            commands.append(f"ufw {args}")
    if not status["active"]:
        commands.append("ufw --force enable")
    if commands:
        server.shell(name="ufw: deny incoming except 22/80/443", commands=commands)
