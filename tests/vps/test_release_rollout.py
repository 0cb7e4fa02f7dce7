"""prodstack-release's rollout (pyinfra/files/) against a stand-in Docker and nginx: what
it does after a run was interrupted, when a bake is rolled back with part of the baking
set gone, and after a reboot lost the bake's timer. Each runs in well under a second; the
e2e files are the proof on a real host."""

from __future__ import annotations

import runpy
import time
from pathlib import Path

import pytest

FILES = Path(__file__).resolve().parents[2] / "pyinfra" / "files"
CFG = {"replicas": 2, "port_base": 8001, "spare_port_base": 8101, "hash": "cfg1",
       "drain_seconds": 0, "ready_timeout_seconds": 1, "container_port": 8000}  # fmt: skip


class Host:
    """The containers and the upstream file, and every change in order."""

    def __init__(self, containers, upstream):
        self.containers = containers
        self.upstream = list(upstream)
        self.events: list[tuple] = []

    def patch(self, monkeypatch, release, *, ready=True):
        g = release["replace"].__globals__
        monkeypatch.setitem(g, "containers", lambda: [dict(c) for c in self.containers])
        monkeypatch.setitem(g, "read_upstream", lambda cfg: sorted(self.upstream))
        monkeypatch.setitem(g, "write_upstream", self.write_upstream)
        monkeypatch.setitem(g, "run", self.run)
        monkeypatch.setitem(g, "image_id", lambda ref: "sha256:" + ref.split(":")[-1])
        monkeypatch.setitem(g, "wait_ready", lambda cfg, name, port: ready)
        monkeypatch.setitem(g, "stop", self.stop)
        monkeypatch.setitem(g, "confined", lambda cfg: [])  # docker run's sandbox flags
        monkeypatch.setitem(g, "log", lambda message: None)
        monkeypatch.setattr(time, "sleep", lambda s: None)

    def write_upstream(self, cfg, ports):
        self.upstream = sorted(ports)
        self.events.append(("upstream", tuple(self.upstream)))

    def stop(self, cfg, name):
        self.events.append(("stop", name))
        self.containers = [c for c in self.containers if c["name"] != name]

    def run(self, *args, check=True):
        if args[:3] == ("docker", "rm", "-f"):
            self.stop(None, args[3])
        elif args[:2] == ("docker", "run"):
            labels = dict(a.split("=", 1) for a in args if a.startswith("prodstack."))
            name = args[args.index("--name") + 1]
            self.containers.append(container(name, int(labels["prodstack.replica"]),
                                             int(labels["prodstack.port"]),
                                             labels["prodstack.image"]))  # fmt: skip
            self.events.append(("start", name))

        class Done:
            returncode, stdout, stderr = 0, "", ""

        return Done()


def container(name, replica, port, image="prodstack-api:v1", running=True):
    return {"name": name, "replica": replica, "port": port, "image": image, "config": "cfg1",
            "digest": "sha256:" + image.split(":")[-1], "running": running}  # fmt: skip


@pytest.fixture
def release():
    return runpy.run_path(str(FILES / "prodstack-release"))


def interrupted_host():
    # Replica 1's replacement (v2 on 8101) started, then the run was cut off before nginx
    # moved to it: nginx still routes to v1 on 8001. The leftover comes first in the list.
    return Host([container("prodstack-api-1-8101", 1, 8101, "prodstack-api:v2"),
                 container("prodstack-api-1-8001", 1, 8001),
                 container("prodstack-api-2-8002", 2, 8002)], upstream=[8001, 8002])  # fmt: skip


def test_the_serving_replica_is_the_one_nginx_routes_to_not_a_leftover(release, monkeypatch):
    host = interrupted_host()
    host.patch(monkeypatch, release)
    serving = release["serving_set"](CFG, host.containers)
    assert {r: c["port"] for r, c in serving.items()} == {1: 8001, 2: 8002}


def test_a_rerun_after_an_interruption_never_stops_what_serves_before_its_successor(
        release, monkeypatch):  # fmt: skip
    host = interrupted_host()
    host.patch(monkeypatch, release)
    release["replace"](CFG, "prodstack-api:v2", False)
    assert sorted(host.upstream) == [8101, 8102]
    # v1 on 8001 stops only after nginx routes replica 1 to its successor.
    switched = host.events.index(("upstream", (8002, 8101)))
    assert host.events.index(("stop", "prodstack-api-1-8001")) > switched
    # nginx never routed to a port without a running container.
    assert all(("stop", f"prodstack-api-1-{p}") not in host.events[:switched] for p in (8001,))


def test_start_refuses_a_port_nginx_routes_to(release, monkeypatch):
    host = interrupted_host()
    host.patch(monkeypatch, release)
    with pytest.raises(RuntimeError, match="8001: nginx routes to it"):
        release["start"](CFG, "prodstack-api:v2", 1, 8001)
    assert host.events == []  # nothing removed


def baking_host():
    # v2 serves on 8001/8002; v1's set bakes on 8101/8102.
    return Host([container("prodstack-api-1-8001", 1, 8001, "prodstack-api:v2"),
                 container("prodstack-api-2-8002", 2, 8002, "prodstack-api:v2"),
                 container("prodstack-api-1-8101", 1, 8101),
                 container("prodstack-api-2-8102", 2, 8102)], upstream=[8001, 8002])  # fmt: skip


BAKE = {"image": "prodstack-api:v1", "containers": ["prodstack-api-1-8101",
                                                    "prodstack-api-2-8102"]}  # fmt: skip


def test_rollback_during_a_bake_switches_nginx_back_to_the_whole_baking_set(release, monkeypatch):
    host = baking_host()
    host.patch(monkeypatch, release)
    monkeypatch.setitem(release["replace"].__globals__, "write_bake", lambda bake: None)
    assert release["switch_back"](CFG, BAKE) is not None
    assert host.upstream == [8101, 8102]


def test_rollback_with_part_of_the_baking_set_gone_leaves_nginx_alone(release, monkeypatch):
    host = baking_host()
    host.containers = [c for c in host.containers if c["port"] != 8102]  # gone
    host.patch(monkeypatch, release)
    assert release["switch_back"](CFG, BAKE) is None  # the caller deploys v1 instead
    assert host.upstream == [8001, 8002] and host.events == []


def test_rollback_with_no_baking_container_never_empties_the_upstream(release, monkeypatch):
    host = baking_host()
    host.containers = host.containers[:2]
    host.patch(monkeypatch, release)
    assert release["switch_back"](CFG, BAKE) is None
    assert host.upstream == [8001, 8002]


@pytest.mark.parametrize(("left", "action"), [(300, "schedule"), (2, "finish"), (-60, "finish")])
def test_at_boot_a_bake_is_rescheduled_or_ended(release, monkeypatch, left, action):
    g = release["resume_bake"].__globals__
    done = []
    monkeypatch.setitem(g, "read_bake", lambda: {"image": "prodstack-api:v1",
                                                 "until": time.time() + left})  # fmt: skip
    monkeypatch.setitem(g, "schedule_retire", lambda seconds: done.append(("schedule", seconds)))
    monkeypatch.setitem(g, "finish_bake", lambda cfg: done.append(("finish", None)))
    monkeypatch.setitem(g, "log", lambda message: None)
    release["resume_bake"](CFG)
    assert [a for a, _ in done] == [action]
    if action == "schedule":
        assert 290 < done[0][1] <= 300


def test_at_boot_without_a_bake_nothing_happens(release, monkeypatch):
    g = release["resume_bake"].__globals__
    monkeypatch.setitem(g, "read_bake", lambda: None)
    monkeypatch.setitem(g, "schedule_retire", lambda seconds: pytest.fail("scheduled"))
    release["resume_bake"](CFG)
