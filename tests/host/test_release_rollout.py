"""prodstack-release's rollout state machine against a stand-in host (tests/host/standin.py):
every way a deploy or a rollback can fail, and what is left serving after it.

Each test runs the real `Release` methods; only the host below them (docker, nginx,
systemd, /health/ready, memory, the clock) is the stand-in, handed in through the
`Executor` seam. Each runs in well under a second; the e2e files are the proof on a real
host."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prodstack.host import release
from tests.host.standin import StandIn

V1, V2 = "prodstack-api:v1", "prodstack-api:v2"
IMAGES = {V1: "sha256:" + "1" * 64, V2: "sha256:" + "2" * 64}


class Setup:
    """One host with v1 serving on two replicas (8001, 8002), as a deploy leaves it."""

    def __init__(self, tmp_path: Path, *, strategy: str = "rolling", bake: int = 0,
                 memory_mb: int = 512, mem_available_mb: int = 8192) -> None:  # fmt: skip
        (tmp_path / "app.env").write_text("APP_ENV=test\n")
        self.upstream_file = tmp_path / "nginx" / "upstream.conf"
        settings = {
            "replicas": 2, "port_base": 8001, "spare_port_base": 8101, "container_port": 8000,
            "memory_mb": memory_mb, "cpus": 1.0, "network": "prodstack",
            "env_file": str(tmp_path / "app.env"), "ca_file": None,
            "ready_timeout_seconds": 3, "migrate_timeout_seconds": 60, "drain_seconds": 1,
            "strategy": strategy, "bake_seconds": bake, "keep_releases": 5,
            "upstream_file": str(self.upstream_file), "prometheus_targets_file": None,
        }  # fmt: skip
        config = tmp_path / "release.json"
        config.write_text(json.dumps(settings))
        self.cfg = release.load_config(str(config))
        self.host = StandIn(images=IMAGES, mem_available_mb=mem_available_mb)
        self.rel = release.Release(self.host, state=str(tmp_path / "state"), config=str(config))
        for replica, port in ((1, 8001), (2, 8002)):
            self.host.add(f"prodstack-api-{replica}-{port}", replica, port, V1,
                          config=self.cfg["hash"])  # fmt: skip
        self.upstream_file.parent.mkdir()
        self.upstream_file.write_text(release.upstream_text([8001, 8002]))
        entry = release.new_entry([], V1, IMAGES[V1], "deploy", by="alice@laptop",
                                  level="0002_add_index")  # fmt: skip
        self.rel.write_history([entry])

    def upstream(self) -> list[int]:
        return release.read_upstream(self.cfg)

    def serving(self) -> dict[int, str]:
        return self.host.serving(self.upstream())

    def versions(self) -> list[str]:
        return [e["version"] for e in self.rel.read_history()]


def test_a_rolling_deploy_moves_nginx_to_each_new_replica_before_its_old_one_stops(tmp_path):
    s = Setup(tmp_path)
    assert s.rel.deploy(V2) == 0
    assert s.serving() == {8101: V2, 8102: V2}
    assert s.host.names() == ["prodstack-api-1-8101", "prodstack-api-2-8102"]
    events = s.host.events
    assert events.index(("start", "prodstack-api-1-8101")) < events.index(
        ("stop", "prodstack-api-1-8001"))  # fmt: skip
    assert s.versions() == ["v1", "v2"]


def test_a_tag_moved_to_another_build_is_a_new_image_and_replaces_the_replicas(tmp_path):
    """Images are compared by ID, not by tag: `prodstack-api:v1` rebuilt under the same tag
    runs the new build, and the same tag on the same build changes nothing."""
    s = Setup(tmp_path)
    assert s.rel.in_sync(s.cfg, V1, s.rel.containers()) is None
    assert s.rel.deploy(V1) == 0
    assert s.host.did("start") == []
    s.host.images[V1] = "sha256:" + "3" * 64  # the tag now names another build
    assert s.rel.in_sync(s.cfg, V1, s.rel.containers()) == "replica 1 runs prodstack-api:v1"
    assert s.rel.deploy(V1) == 0
    assert s.serving() == {8101: V1, 8102: V1}
    assert [c["digest"] for c in s.host.containers] == ["sha256:" + "3" * 64] * 2


def test_a_replica_failing_its_gate_is_removed_and_the_replaced_ones_are_put_back(
        tmp_path, capsys):  # fmt: skip
    s = Setup(tmp_path)
    # Replica 1 takes v2; replica 2's v2 never answers: the deploy fails half-way.
    s.host.ready = lambda port: port != 8102
    assert s.rel.deploy(V2) == 1
    out = capsys.readouterr().out
    assert "replica 2: not ready within 3s" in out
    assert "putting replicas [1] back on prodstack-api:v1" in out
    # The failed v2 container is gone, replica 2's v1 never stopped, replica 1 is on v1 again.
    assert ("remove", "prodstack-api-2-8102") in s.host.events
    assert ("stop", "prodstack-api-2-8002") not in s.host.events
    assert set(s.serving().values()) == {V1} and len(s.serving()) == 2
    assert all(c["image"] == V1 for c in s.host.containers)
    assert s.versions() == ["v1"]  # not recorded


def test_the_first_replica_failing_changes_nothing(tmp_path, capsys):
    s = Setup(tmp_path)
    s.host.unready.add(V2)
    assert s.rel.deploy(V2) == 1
    assert "putting replicas" not in capsys.readouterr().out
    assert s.upstream() == [8001, 8002] and s.serving() == {8001: V1, 8002: V1}
    assert s.host.names() == ["prodstack-api-1-8001", "prodstack-api-2-8002"]
    assert s.host.did("reload") == []


def test_a_failed_migration_aborts_before_any_replica_is_touched(tmp_path, capsys):
    s = Setup(tmp_path)
    s.host.migrate = "fails"
    assert s.rel.deploy(V2) == 1
    assert "migrate failed" in capsys.readouterr().out
    assert s.host.did("start") == [] and s.serving() == {8001: V1, 8002: V1}


def test_a_hung_migration_is_stopped_and_its_session_ended(tmp_path, capsys):
    s = Setup(tmp_path)
    s.host.migrate = "hangs"
    assert s.rel.deploy(V2) == 1
    assert "did not finish within 60s" in capsys.readouterr().out
    assert ("one-off", "migrate-stop") in s.host.events
    assert s.host.did("start") == []


def test_a_bad_upstream_is_put_back_when_nginx_refuses_it(tmp_path):
    s = Setup(tmp_path)
    before = s.upstream_file.read_text()
    s.host.nginx_config_ok = False
    with pytest.raises(RuntimeError, match="nginx -t failed"):
        s.rel.write_upstream(s.cfg, [8101, 8102])
    assert s.upstream_file.read_text() == before and s.host.did("reload") == []


def test_blue_green_refuses_without_headroom_naming_the_numbers(tmp_path, capsys):
    s = Setup(tmp_path, strategy="blue_green", memory_mb=512, mem_available_mb=1000)
    assert s.rel.deploy(V2) == 1
    out = capsys.readouterr().out
    assert ("2 replicas x 512 MB = 1024 MB, but only 744 MB are available "
            "(MemAvailable 1000 MB minus 256 MB kept for the system)") in out  # fmt: skip
    assert "Refused before any change" in out
    assert s.host.did("start") == [] and ("one-off", "migrate") not in s.host.events
    assert s.serving() == {8001: V1, 8002: V1}


def test_blue_green_with_a_replica_failing_stops_the_whole_new_set(tmp_path, capsys):
    s = Setup(tmp_path, strategy="blue_green", bake=300)
    s.host.ready = lambda port: port != 8102
    assert s.rel.deploy(V2) == 1
    assert "aborted before the switch" in capsys.readouterr().out
    assert s.upstream() == [8001, 8002] and s.host.did("reload") == []
    assert s.host.names() == ["prodstack-api-1-8001", "prodstack-api-2-8002"]
    assert s.rel.read_bake() is None and s.versions() == ["v1"]


def baked(tmp_path) -> Setup:
    """v2 switched in by blue/green; v1's set bakes for 300 s with its retire timer."""
    s = Setup(tmp_path, strategy="blue_green", bake=300)
    assert s.rel.deploy(V2) == 0
    assert s.serving() == {8101: V2, 8102: V2}
    return s


def test_blue_green_switches_in_one_reload_and_bakes_the_old_set(tmp_path):
    s = baked(tmp_path)
    assert len(s.host.did("reload")) == 1
    bake = s.rel.read_bake()
    assert bake["image"] == V1 and sorted(bake["containers"]) == [
        "prodstack-api-1-8001", "prodstack-api-2-8002"]  # fmt: skip
    assert bake["until"] == s.host.clock + 300
    [timer] = s.host.did("timer")
    assert timer[1] == 300 and timer[2] == ["/usr/local/sbin/prodstack-release", "retire"]
    assert {c["image"] for c in s.host.containers if c["running"]} == {V1, V2}


def test_a_rollback_during_the_bake_switches_nginx_back_and_stops_the_new_set(tmp_path):
    s = baked(tmp_path)
    s.host.events.clear()
    assert s.rel.rollback() == 0
    assert s.serving() == {8001: V1, 8002: V1}
    assert s.host.did("start") == []  # the baking set serves again, nothing started
    assert ("systemctl", "stop", "prodstack-release-retire.timer") in s.host.events
    assert s.host.names() == ["prodstack-api-1-8001", "prodstack-api-2-8002"]
    assert s.rel.read_bake() is None
    assert [(e["version"], e["kind"]) for e in s.rel.read_history()] == [
        ("v1", "deploy"), ("v2", "deploy"), ("v1", "rollback")]  # fmt: skip


def test_a_rollback_with_part_of_the_baking_set_gone_deploys_the_old_image(tmp_path, capsys):
    s = baked(tmp_path)
    s.host.containers = [c for c in s.host.containers if c["name"] != "prodstack-api-2-8002"]
    routed = []
    write = s.rel.write_upstream
    s.rel.write_upstream = lambda cfg, ports: (routed.append(sorted(ports)), write(cfg, ports))
    assert s.rel.rollback() == 0
    assert "1 of the 2 baking containers run; deploying prodstack-api:v1" in capsys.readouterr().out
    # nginx was never pointed at fewer replicas than wanted, nor at none.
    assert routed and all(len(ports) == 2 for ports in routed)
    assert set(s.serving().values()) == {V1} and len(s.serving()) == 2
    assert s.versions() == ["v1", "v2", "v1"]


def test_a_rollback_after_the_bake_deploys_the_earlier_image_again(tmp_path):
    s = baked(tmp_path)
    s.host.sleep(301)
    s.rel.finish_bake(s.cfg)  # the retire timer
    assert s.rel.read_bake() is None
    assert s.host.names() == ["prodstack-api-1-8101", "prodstack-api-2-8102"]
    assert s.rel.rollback() == 0
    assert set(s.serving().values()) == {V1}
    assert s.rel.read_history()[-1]["kind"] == "rollback"


@pytest.mark.parametrize(("left", "after"), [(120, "rescheduled"), (3, "ended"), (-60, "ended")])
def test_after_a_reboot_the_lost_retire_timer_is_rescheduled_or_the_bake_ended(
        tmp_path, left, after):  # fmt: skip
    s = baked(tmp_path)
    s.host.events.clear()
    # A reboot later: transient timers are gone; prodstack-release-resume runs at boot.
    s.host.clock = s.rel.read_bake()["until"] - left
    s.rel.resume_bake(s.cfg)
    if after == "rescheduled":
        [timer] = s.host.did("timer")
        assert timer[1] == left and s.rel.read_bake() is not None
        assert s.host.did("stop") == []
    else:
        assert s.host.did("timer") == [] and s.rel.read_bake() is None
        assert sorted(e[1] for e in s.host.did("stop")) == [
            "prodstack-api-1-8001", "prodstack-api-2-8002"]  # fmt: skip
    assert s.serving() == {8101: V2, 8102: V2}


def test_at_boot_without_a_bake_nothing_happens(tmp_path):
    s = Setup(tmp_path)
    s.rel.resume_bake(s.cfg)
    assert s.host.events == []


def interrupted(tmp_path) -> Setup:
    """Replica 1's replacement (v2 on 8101) started, then the run was cut off before nginx
    moved to it: nginx still routes to v1 on 8001. The leftover comes first in the list."""
    s = Setup(tmp_path)
    s.host.containers.insert(0, {**s.host.containers[0], "name": "prodstack-api-1-8101",
                                 "port": 8101, "image": V2, "digest": IMAGES[V2]})  # fmt: skip
    return s


def test_the_serving_replica_is_the_one_nginx_routes_to_not_a_leftover(tmp_path):
    s = interrupted(tmp_path)
    serving = release.serving_set(s.cfg, s.rel.containers())
    assert {r: c["port"] for r, c in serving.items()} == {1: 8001, 2: 8002}


def test_a_rerun_after_an_interruption_never_stops_what_serves_before_its_successor(tmp_path):
    s = interrupted(tmp_path)
    assert s.rel.deploy(V2) == 0
    assert s.upstream() == [8101, 8102]
    events = s.host.events
    # v1 on 8001 stops only after nginx routes replica 1 to its successor.
    first_reload = events.index(("reload",))
    assert events.index(("stop", "prodstack-api-1-8001")) > first_reload
    assert s.host.names() == ["prodstack-api-1-8101", "prodstack-api-2-8102"]


def test_start_refuses_a_port_nginx_routes_to(tmp_path):
    s = interrupted(tmp_path)
    with pytest.raises(RuntimeError, match="8001: nginx routes to it"):
        s.rel.start(s.cfg, V2, 1, 8001)
    assert s.host.events == []  # nothing removed


def test_replica_commands_are_built_without_a_host():
    cfg = {"memory_mb": 384, "cpus": 1.0, "env_file": "/etc/prodstack/app.env",
           "network": "prodstack", "container_port": 8000, "hash": "abc"}  # fmt: skip
    args = release.replica_run(cfg, V2, IMAGES[V2], 2, 8102)
    assert args[:5] == ["docker", "run", "--detach", "--name", "prodstack-api-2-8102"]
    assert args[-2:] == [V2, "serve"]
    assert f"prodstack.digest={IMAGES[V2]}" in args and "prodstack.port=8102" in args
    assert "127.0.0.1:8102:8000" in args
    cfg_ports = {"port_base": 8001, "spare_port_base": 8101}
    assert release.replica_port(cfg_ports, 2, None) == 8002
    assert release.replica_port(cfg_ports, 2, {"port": 8002}) == 8102
    assert release.replica_port(cfg_ports, 2, {"port": 8102}) == 8002
    assert release.upstream_text([]).splitlines()[-1] == "server 127.0.0.1:9 down;"
