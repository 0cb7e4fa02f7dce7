"""ufw: deny incoming except SSH, 80 and 443 (plus PostgreSQL/Redis from the containers)."""

from __future__ import annotations

import ipaddress
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
# A port open to one source, as wanted_rules asks for it and as `ufw show added` prints it.
WANTED_FROM = re.compile(r"^allow proto tcp from (\S+) to any port (\d+)$")
ADDED_FROM = re.compile(r"^ufw allow from (\S+) to any port (\d+) proto tcp$")


def wanted_rules(cfg: Settings) -> list[tuple[str, str]]:
    """(ufw command args, the line `ufw status verbose` prints for it)."""
    # The port pyinfra connects on, so enabling ufw never cuts off the next run, and while
    # SSH moves, the next one (the old port goes once a deploy connects on the new one).
    rules = [(f"allow {port}/tcp", f"{port}/tcp ALLOW IN Anywhere") for port in cfg.ssh_ports]
    if cfg.is_web:
        rules += [
            ("allow 80/tcp", "80/tcp ALLOW IN Anywhere"),
            ("allow 443/tcp", "443/tcp ALLOW IN Anywhere"),
        ]
        # The PROXY-protocol port, for the load balancers only: from anyone else a PROXY
        # header would let a client choose its own address.
        rules += [_from(cidr, cfg.proxy_protocol_port) for cidr in cfg.proxy_protocol_from]
    if cfg.is_db:
        for cidr in cfg.db_client_cidrs:
            rules += [_from(cidr, port) for port in (cfg.postgres_port, cfg.redis_port)]
    return rules


def _from(cidr: str, port: int) -> tuple[str, str]:
    # ufw prints a single address without its /32 (or /128).
    shown = cidr.removesuffix("/32").removesuffix("/128")
    return f"allow proto tcp from {cidr} to any port {port}", f"{port}/tcp ALLOW IN {shown}"


def stale_ports(cfg: Settings, added: list[str]) -> list[int]:
    """Ports open to everyone (`ufw show added` lines) that the stack no longer serves: an
    old SSH port, 80/443 on a host that stopped being a web host."""
    wanted = {
        int(m.group(1)) for _, line in wanted_rules(cfg) if (m := OPEN_TO_ANYWHERE.match(line))
    }
    found = {int(m.group(1)) for line in added if (m := ADDED_FOR_ANYWHERE.match(line))}
    return sorted(found - wanted)


def stale_sources(cfg: Settings, added: list[str]) -> list[tuple[str, int]]:
    """(source, port) rules (`ufw allow from SOURCE to any port PORT proto tcp`) the stack
    no longer wants: a web host taken out of db_client_cidrs, a moved PostgreSQL or Redis
    port. ufw is the stack's own, as for the ports above."""
    wanted = {
        (ipaddress.ip_network(m.group(1), strict=False), int(m.group(2)))
        for args, _ in wanted_rules(cfg) if (m := WANTED_FROM.match(args))
    }  # fmt: skip
    stale = []
    for line in added:
        m = ADDED_FROM.match(line)
        if m and (ipaddress.ip_network(m.group(1), strict=False), int(m.group(2))) not in wanted:
            stale.append((m.group(1), int(m.group(2))))
    return stale


def ufw_commands(cfg: Settings, status: dict) -> list[str]:
    """What brings ufw from `status` (the UfwStatus fact) to the stack's rules, in an order
    that never cuts the connection pyinfra is using: the allow rules first, then the
    default policies, then the stale rules' removal, then enabling."""
    commands = [f"ufw {args}" for args, line in wanted_rules(cfg) if line not in status["rules"]]
    if "deny (incoming)" not in status["defaults"]:
        commands.append("ufw default deny incoming")
    if "allow (outgoing)" not in status["defaults"]:
        commands.append("ufw default allow outgoing")
    added = status.get("added", [])
    commands += [f"ufw delete allow {port}/tcp" for port in stale_ports(cfg, added)]
    commands += [f"ufw delete allow from {source} to any port {port} proto tcp"
                 for source, port in stale_sources(cfg, added)]  # fmt: skip
    if not status["active"]:
        commands.append("ufw --force enable")
    return commands


@deploy("Firewall")
def firewall(cfg: Settings) -> None:
    # pyinfra has no ufw operation: compare `ufw status verbose` with the wanted rules
    # and run ufw only for what differs, so a converged host runs nothing.
    # Routed traffic is Docker's (published ports are on 127.0.0.1 only, see service.py).
    status = host.get_fact(UfwStatus) or {"active": False, "defaults": "", "rules": [],
                                          "added": []}  # fmt: skip
    commands = ufw_commands(cfg, status)
    if commands:
        ssh = "/".join(map(str, cfg.ssh_ports))
        server.shell(name=f"ufw: deny incoming except {ssh}/80/443", commands=commands)
