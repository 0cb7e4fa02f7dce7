"""ufw: deny incoming except SSH, 80 and 443 (plus PostgreSQL/Redis from the containers)."""

from __future__ import annotations

import re

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import server

from tasks.config import Settings
from tasks.facts import UfwStatus

# A port open to everyone, as `ufw status verbose` prints it (IPv4 and IPv6 lines), and as
# `ufw show added` does (also while ufw is inactive).
OPEN_TO_ANYWHERE = re.compile(r"^(\d+)/tcp (?:\(v6\) )?ALLOW IN Anywhere(?: \(v6\))?$")
ADDED_FOR_ANYWHERE = re.compile(r"^ufw allow (\d+)/tcp$")


def wanted_rules(cfg: Settings) -> list[tuple[str, str]]:
    """(ufw command args, the line `ufw status verbose` prints for it)."""
    rules = [
        # The port pyinfra connects on, so enabling ufw never cuts off the next run.
        (f"allow {cfg.ssh_port}/tcp", f"{cfg.ssh_port}/tcp ALLOW IN Anywhere"),
    ]
    if cfg.is_web:
        rules += [
            ("allow 80/tcp", "80/tcp ALLOW IN Anywhere"),
            ("allow 443/tcp", "443/tcp ALLOW IN Anywhere"),
        ]
    if cfg.is_db:
        for cidr in cfg.db_client_cidrs:
            # ufw prints a single address without its /32 (or /128).
            shown = cidr.removesuffix("/32").removesuffix("/128")
            for port in (cfg.postgres_port, cfg.redis_port):
                rules.append(
                    (
                        f"allow proto tcp from {cidr} to any port {port}",
                        f"{port}/tcp ALLOW IN {shown}",
                    )
                )
    return rules


def stale_ports(cfg: Settings, added: list[str]) -> list[int]:
    """Ports open to everyone (`ufw show added` lines) that the stack no longer serves: an
    old SSH port, 80/443 on a host that stopped being a web host."""
    wanted = {
        int(m.group(1)) for _, line in wanted_rules(cfg) if (m := OPEN_TO_ANYWHERE.match(line))
    }
    found = {int(m.group(1)) for line in added if (m := ADDED_FOR_ANYWHERE.match(line))}
    return sorted(found - wanted)


@deploy("Firewall")
def firewall(cfg: Settings) -> None:
    # pyinfra has no ufw operation: compare `ufw status verbose` with the wanted rules
    # and run ufw only for what differs, so a converged host runs nothing.
    status = host.get_fact(UfwStatus) or {"active": False, "defaults": "", "rules": [],
                                          "added": []}  # fmt: skip
    commands = []
    if "deny (incoming)" not in status["defaults"]:
        commands.append("ufw default deny incoming")
    if "allow (outgoing)" not in status["defaults"]:
        commands.append("ufw default allow outgoing")
    # Routed traffic is Docker's (published ports are on 127.0.0.1 only, see service.py).
    for args, line in wanted_rules(cfg):
        if line not in status["rules"]:
            commands.append(f"ufw {args}")
    # After the new SSH rule, so the connection pyinfra is using stays open throughout.
    stale = stale_ports(cfg, status.get("added", []))
    commands += [f"ufw delete allow {port}/tcp" for port in stale]
    if not status["active"]:
        commands.append("ufw --force enable")
    if commands:
        server.shell(name=f"ufw: deny incoming except {cfg.ssh_port}/80/443", commands=commands)
