"""Docker engine from the distribution, with log rotation and the containers' network."""

from __future__ import annotations

from pyinfra.api import deploy
from pyinfra.operations import docker

from tasks.config import Settings
from tasks.templates import restart_on_change, template, unit_file


@deploy("Docker engine")
def engine(cfg: Settings) -> None:
    daemon = template(
        name="dockerd: log rotation and live-restore",
        src="daemon.j2.json",
        dest="/etc/docker/daemon.json",
        cfg=cfg,
    )
    # live-restore keeps the containers running while dockerd restarts.
    restart_on_change("docker.service", daemon.did_change, label="Docker")
    docker.network(
        name="Container network (PostgreSQL and Redis listen on its gateway)",
        network="prodstack",
        driver="bridge",
        subnet=cfg.docker_subnet,
        gateway=cfg.docker_gateway,
        opts=[f"com.docker.network.bridge.name={cfg.docker_bridge}"],
    )
    guard = unit_file(
        name="Unit prodstack-loopback-guard.service (replica ports unreachable from neighbours)",
        src="prodstack-loopback-guard.j2.service",
        dest="/etc/systemd/system/prodstack-loopback-guard.service",
        label="loopback guard",
        cfg=cfg,
    )
    restart_on_change("prodstack-loopback-guard.service", guard.did_change, label="Loopback guard")
