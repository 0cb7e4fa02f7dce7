"""A stand-in host for prodstack-release's rollout: what the real `release.Host` does with
docker, nginx, systemd, /health/ready, /proc/meminfo and the clock, kept in memory.

It answers the commands the rollout runs the way those programs answer them, records each
change in `events` in order, and its clock moves only when the rollout sleeps. The e2e
tests (tests/vps/test_e2e_releases.py) run the same rollout against a real host."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from typing import Any


class StandIn:
    def __init__(self, *, images: dict[str, str] | None = None, mem_available_mb: int = 8192,
                 now: float = 1_800_000_000.0) -> None:  # fmt: skip
        self.images = dict(images or {})  # reference -> image ID
        self.containers: list[dict[str, Any]] = []
        self.mem = mem_available_mb
        self.clock = now
        self.events: list[tuple] = []
        self.unready: set[str] = set()  # images whose replicas never answer /health/ready
        self.migrate: str = "ok"  # "ok" | "fails" | "hangs"
        self.nginx_config_ok = True
        self.schema_level = "0002_add_index"

    # --- the Executor protocol -------------------------------------------------------------

    def run(self, args: Sequence[str], *, check: bool = True,
            timeout: float | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
        args = list(args)
        code, out = self._answer(args, timeout)
        if check and code != 0:
            raise RuntimeError(f"{' '.join(args)} failed: stand-in")
        return subprocess.CompletedProcess(args, code, stdout=out, stderr="")

    def ready(self, port: int) -> bool:
        return any(c["port"] == port and c["running"] and c["image"] not in self.unready
                   for c in self.containers)  # fmt: skip

    def mem_available_mb(self) -> int:
        return self.mem

    def sleep(self, seconds: float) -> None:
        self.clock += seconds

    def time(self) -> float:
        return self.clock

    def monotonic(self) -> float:
        return self.clock

    # --- what a test sets up and reads -----------------------------------------------------

    def add(self, name: str, replica: int, port: int, image: str, *, config: str = "",
            running: bool = True) -> None:  # fmt: skip
        self.containers.append({"name": name, "replica": replica, "port": port, "image": image,
                                "digest": self.images.get(image, ""), "config": config,
                                "running": running})  # fmt: skip

    def names(self) -> list[str]:
        return sorted(c["name"] for c in self.containers)

    def serving(self, upstream: list[int]) -> dict[int, str]:
        """port -> image of each container nginx routes to."""
        return {c["port"]: c["image"] for c in self.containers if c["port"] in upstream}

    def did(self, kind: str) -> list[tuple]:
        return [e for e in self.events if e[0] == kind]

    # --- the programs ------------------------------------------------------------------------

    def _remove(self, name: str) -> None:
        if any(c["name"] == name for c in self.containers):
            self.events.append(("remove", name))
        self.containers = [c for c in self.containers if c["name"] != name]

    def _answer(self, args: list[str], timeout: float | None) -> tuple[int, str]:
        match args:
            case ["docker", "ps", "-aq", *_]:
                return 0, "\n".join(c["name"] for c in self.containers)
            case ["docker", "inspect", "-f", _, name]:
                found = [c for c in self.containers if c["name"] == name]
                return (0, "running\n") if found and found[0]["running"] else (1, "")
            case ["docker", "inspect", *names]:
                return 0, json.dumps([self._inspect(n) for n in names])
            case ["docker", "image", "inspect", "--format", _, ref]:
                found = self._image(ref)
                return (0, found + "\n") if found else (1, "")
            case ["docker", "image", "inspect", ref]:
                found = self._image(ref)
                tags = [r for r, i in self.images.items() if i == found and r != found]
                return (0, json.dumps([{"RepoTags": tags}])) if found else (1, "")
            case ["docker", "rmi", ref]:
                if any(c["digest"] == self._image(ref) for c in self.containers):
                    return 1, ""
                self.images = {r: i for r, i in self.images.items() if r != ref and i != ref}
                self.events.append(("rmi", ref))
                return 0, ""
            case ["docker", "rm", "-f", name]:
                self._remove(name)
                return 0, ""
            case ["docker", "stop", "--time", _, name]:
                self.events.append(("stop", name))
                return 0, ""
            case ["docker", "logs", *_]:
                return 0, ""
            case ["docker", "run", "--detach", *rest]:
                labels = dict(a.split("=", 1) for a in rest if a.startswith("prodstack."))
                name = rest[rest.index("--name") + 1]
                self.add(name, int(labels["prodstack.replica"]), int(labels["prodstack.port"]),
                         labels["prodstack.image"], config=labels["prodstack.config"])  # fmt: skip
                self.events.append(("start", name))
                return 0, ""
            case ["docker", "run", "--rm", *rest]:
                return self._one_off(args, rest, timeout)
            case ["nginx", "-t", "-q"]:
                return (0, "") if self.nginx_config_ok else (1, "")
            case ["systemctl", "is-active", "-q", "nginx"]:
                return 0, ""
            case ["systemctl", "reload", "nginx"]:
                self.events.append(("reload",))
                return 0, ""
            case ["systemctl", *rest]:
                self.events.append(("systemctl", *rest))
                return 0, ""
            case ["systemd-run", *rest]:
                on_active = next(a for a in rest if a.startswith("--on-active="))
                self.events.append(("timer", int(on_active.split("=")[1].rstrip("s")), rest[-2:]))
                return 0, ""
        raise AssertionError(f"the stand-in host does not know {args}")

    def _one_off(self, args: list[str], rest: list[str], timeout: float | None) -> tuple[int, str]:
        command = rest[-1]
        self.events.append(("one-off", command))
        if command == "migrate":
            if self.migrate == "hangs":
                raise subprocess.TimeoutExpired(args, timeout or 0)
            return (0, "") if self.migrate == "ok" else (1, "migration 0003 failed\n")
        if command == "schema-version":
            return 0, self.schema_level + "\n"
        return 0, ""

    def _image(self, ref: str) -> str | None:
        if ref in self.images:
            return self.images[ref]
        return ref if ref in self.images.values() else None

    def _inspect(self, name: str) -> dict[str, Any]:
        c = next(c for c in self.containers if c["name"] == name)
        labels = {"prodstack.replica": str(c["replica"]), "prodstack.port": str(c["port"]),
                  "prodstack.image": c["image"], "prodstack.digest": c["digest"],
                  "prodstack.config": c["config"]}  # fmt: skip
        return {"Name": "/" + name, "Config": {"Labels": labels},
                "State": {"Running": c["running"]}}  # fmt: skip
