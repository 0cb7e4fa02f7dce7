"""The multi-host tests' private network (tests/vps/e2e.py, Cluster): a network a killed
run left on the subnet is removed, so the next run's setup does not fail on "Pool
overlaps"; a network another live run's hosts are on is kept."""

from __future__ import annotations

import os
import subprocess

from tests.support.docker import python_base_image
from tests.vps.e2e import _remove_abandoned_networks

SUBNET = "10.79.251.0/24"


def _network(name: str) -> None:
    subprocess.run(["docker", "network", "rm", name], capture_output=True)
    subprocess.run(["docker", "network", "create", "--subnet", SUBNET, name],
                   check=True, capture_output=True)  # fmt: skip


def _exists(name: str) -> bool:
    return subprocess.run(["docker", "network", "inspect", name],
                          capture_output=True).returncode == 0  # fmt: skip


def test_an_abandoned_network_on_the_subnet_is_removed(docker_engine):
    name = f"prodstack-test-abandoned-{os.getpid()}"
    _network(name)
    _remove_abandoned_networks(SUBNET)
    assert not _exists(name)
    # and the run's own network can then be created on the subnet
    _network(name)
    subprocess.run(["docker", "network", "rm", name], capture_output=True)


def test_a_network_with_containers_is_kept(docker_engine):
    name = f"prodstack-test-live-{os.getpid()}"
    _network(name)
    container = f"{name}-host"
    subprocess.run(["docker", "run", "-d", "--name", container, "--network", name,
                    "--entrypoint", "sleep", python_base_image(), "60"],
                   check=True, capture_output=True)  # fmt: skip
    try:
        _remove_abandoned_networks(SUBNET)
        assert _exists(name)
    finally:
        subprocess.run(["docker", "rm", "-f", container], capture_output=True)
        subprocess.run(["docker", "network", "rm", name], capture_output=True)
