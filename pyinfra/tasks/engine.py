"""Docker engine from the distribution, with log rotation and the containers' network."""

from __future__ import annotations

from pyinfra.api import deploy
from pyinfra.operations import docker, systemd

from tasks.config import Settings
from tasks.templates import template


@deploy("Docker engine")
def engine(cfg: Settings) -> None:
    daemon = template(
        name="dockerd: log rotation and live-restore",
        src="daemon.j2.json",
        dest="/etc/docker/daemon.json",
        cfg=cfg,
    )
    systemd.service(
        name="Docker running and enabled",
        service="docker.service",
        running=True,
        enabled=True,
    )
    systemd.service(
        name="Restart Docker for the new daemon.json (live-restore keeps containers up)",
        service="docker.service",
        restarted=True,
        _if=daemon.did_change,
    )
    docker.network(
        name="Container network (PostgreSQL and Redis listen on its gateway)",
        network="prodstack",
        driver="bridge",
        subnet=cfg.docker_subnet,
        gateway=cfg.docker_gateway,
        opts=[f"com.docker.network.bridge.name={cfg.docker_bridge}"],
    )
