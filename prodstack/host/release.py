"""prodstack-release: health-gated deploys of the API containers, and their release history
(managed by prodstack).

    prodstack-release deploy IMAGE [--force] [--no-migrate] [--revision REV] [--by WHO]
    prodstack-release rollback [--to VERSION]   # undo the last deploy, or go to a kept release
    prodstack-release history [--json]          # every deploy and rollback on this host
    prodstack-release status [--json]           # what serves now, and the rollback target (JSON)
    prodstack-release check IMAGE       # exit 0 and print "in-sync" if nothing to do
    prodstack-release targets           # rewrite Prometheus's list of replicas
    prodstack-release retire            # end a blue/green bake (run by its timer)
    prodstack-release resume            # at boot: reschedule or end an interrupted bake
    prodstack-release stop              # stop every replica (before a database restore)
    prodstack-release start             # migrate, then start the current image's replicas
    prodstack-release replicas          # each replica with its readiness, the upstream (JSON)
    prodstack-release lock acquire -m MESSAGE [--by WHO] | release [--by WHO] [--force] | status
    prodstack-release exec [-i] [--by WHO] -- CMD ...   # a one-off container of the current image

deploy runs `migrate` once, then follows release.json's "strategy":

rolling: replaces the replicas one at a time. Each replacement starts on the replica's
spare port, must answer /health/ready, is switched into the nginx upstream (reload), and
only then does the old container drain and stop. A failed check removes the new
container and exits 1: the old containers keep serving, and replicas already replaced in
this run are put back on the old image.

blue_green: first checks that the host's available memory holds a second full set (and
refuses with the numbers if not), then starts every new replica on its other port, gates
each on /health/ready, and switches the nginx upstream to the whole new set in one reload
(after `nginx -t`). The old set keeps running for "bake_seconds": `rollback` during the
bake points nginx back at it at once; a transient systemd timer runs `retire` at the end
of the bake to stop it. After the bake, `rollback` deploys the earlier image again.

Releases. A release is one image, named by its version (the image tag) and identified by
its digest (the local image ID, `sha256:...`): images are compared by ID, never by tag.
Every successful deploy and rollback appends an entry to the history; the last entry is
the release serving now. The host keeps the images of the newest `keep_releases` releases
(release.json; never the current one is removed), and `rollback --to` accepts any of them.

rollback with no version undoes the last deploy: it goes to the release that served before
it. Run twice, it stays there (the second run says so and changes nothing); `--to` goes
further back. Migrations are forward-only, so a rollback runs no migration, and it is
refused when the target's migration level is older than the database's schema now (read
with the image's `schema-version` command, docs/image-contract.md): that release would run
against tables it does not know. When either level is unknown the check is skipped, and
said so.

Output, stable for tools (prodstack status reads it over SSH); keys are only ever added:

`history --json`: {"releases": [ENTRY, ...]}, oldest first, the last one serving. ENTRY:
    version          the image tag ("1a2b3c4d5e6f", "v1.4.2"), or "sha256:<12 hex>" untagged
    image            the reference it was deployed as ("prodstack-api:1a2b3c4d5e6f")
    digest           the local image ID, "sha256:<64 hex>"
    deployed_at      UTC, "2026-12-07T06:30:00Z"
    deployed_by      who ran it ("alice@laptop" from pyinfra, else the host user)
    git_revision     the operator's checkout (`git rev-parse HEAD`, "-dirty" if modified), or null
    migration_level  the database schema version after this release's migrate, or null
    kind             "deploy" | "rollback"
    replaced         the version it replaced, or null for the first
    retained         true while its image is still on this host

`status` (JSON with or without --json): {"current": IMAGE|null, "version": V|null, "digest": D|null,
    "deployed_at", "deployed_by", "git_revision", "migration_level", "kind": of the
    current entry (null without history), "previous": the image that served before the
    current one, "rollback_to": the version a bare `rollback` would go to (null when it
    would change nothing), "keep_releases": N, "baking": null | {"image", "containers",
    "until"}, "replicas": [{"name", "replica", "port", "image", "digest", "config",
    "running"}]}

Settings: /etc/prodstack/release.json. State: /var/lib/prodstack/release/history.json
(the `current`/`previous` files of earlier versions are folded into it on first run) and,
during a bake, bake.json; the deploy lock: lock.json.

While the deploy lock (`lock acquire`) is held, deploy, rollback, start and stop refuse at
once, naming the holder and the message, unless run by the holder (--by, or
PRODSTACK_DEPLOY_BY, or the sudo user). Two runs never overlap: a second one says that it
waits for the first. Every run is recorded by prodstack-audit.
"""

from __future__ import annotations

import argparse
import fcntl
import getpass
import hashlib
import json
import os
import pwd
import signal
import subprocess
import sys
import syslog
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from typing import Any, Protocol, TypedDict

from prodstack.host import common

CONFIG = "/etc/prodstack/release.json"
STATE = "/var/lib/prodstack/release"
LOCK = "/run/prodstack-release.lock"
NAME = "prodstack-api"
RETIRE_UNIT = "prodstack-release-retire"
AUDIT = common.command("prodstack-audit")
EXEC_ROLE = "exec"
# Memory kept free for the OS, nginx and dockerd when checking blue/green headroom.
RESERVE_MB = 256
syslog.openlog("prodstack-release")
HISTORY = "history.json"
# Entries kept in history.json: far more than any keep_releases, small enough to read.
HISTORY_LIMIT = 200
DEFAULT_KEEP_RELEASES = 5
# A `schema-version` run is a short query; an image without the command may start serving.
SCHEMA_VERSION_TIMEOUT = 30


class Container(TypedDict):
    """One API container, from its labels (`containers()`)."""

    name: str
    replica: int
    port: int
    image: str
    digest: str
    config: str
    running: bool


class Entry(TypedDict):
    """One release in history.json (the `history --json` ENTRY of the module doc)."""

    version: str
    image: str
    digest: str | None
    deployed_at: str
    deployed_by: str | None
    git_revision: str | None
    migration_level: str | None
    kind: str
    replaced: str | None


class Bake(TypedDict):
    """bake.json: the previous set, kept running until `until` (epoch seconds)."""

    image: str | None
    digest: str | None
    containers: list[str]
    until: float


def log(message):
    print(f"prodstack-release: {message}", flush=True)
    # The journal keeps what each deploy and rollback said (`journalctl -t prodstack-release`).
    syslog.syslog(syslog.LOG_INFO, message)


def load_config(path: str = CONFIG) -> dict[str, Any]:
    with open(path, "rb") as f:
        raw = f.read()
    cfg = json.loads(raw)
    digest = hashlib.sha256(raw)
    # The env file and the CA certificate are part of a replica's settings: a change to
    # either replaces the replicas on the next deploy.
    for path in (cfg["env_file"], cfg.get("ca_file")):
        if path:
            with open(path, "rb") as f:
                digest.update(f.read())
    cfg["hash"] = digest.hexdigest()[:12]
    return cfg


def read_upstream(cfg):
    try:
        with open(cfg["upstream_file"]) as f:
            return sorted(
                int(line.split()[1].rsplit(":", 1)[1].rstrip(";"))
                for line in f
                if line.strip().startswith("server ")
            )
    except FileNotFoundError:
        return []


def write_targets(cfg, ports):
    """Prometheus scrapes exactly the replicas nginx routes to (file_sd), each labelled
    with its replica number, so a rolling deploy moves the targets with the upstream."""
    path = cfg.get("prometheus_targets_file")
    if not path:
        return
    targets = []
    for port in sorted(ports):
        # Replica i listens on port_base + i - 1 or spare_port_base + i - 1.
        replica = next(
            (port - base + 1 for base in (cfg["port_base"], cfg["spare_port_base"])
             if 0 <= port - base < cfg["replicas"]),
            None,
        )  # fmt: skip
        if replica is not None:  # an empty upstream points at port 9: no target
            targets.append({"targets": [f"127.0.0.1:{port}"], "labels": {"replica": str(replica)}})
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(targets, f, indent=2)
        f.write("\n")
    os.chmod(path + ".tmp", 0o644)
    os.replace(path + ".tmp", path)


def same_image(container, image, digest):
    """Compare by image ID; containers started before the digest label by reference."""
    if container.get("digest") and digest:
        return container["digest"] == digest
    return container["image"] == image


def mounts(cfg):
    """Read-only files every API container sees: the private CA when PostgreSQL and Redis
    are on another host (the app verifies their certificates against it)."""
    if not cfg.get("ca_file"):
        return []
    return ["--volume", f"{cfg['ca_file']}:{cfg['ca_file']}:ro"]


def confined(cfg):
    """What every API container runs with, replicas and the migrate run alike: no
    capabilities, no privilege gain, memory/CPU/process limits, a read-only root with a
    small /tmp, and the env file."""
    return [
        "--memory", f"{cfg['memory_mb']}m", "--memory-swap", f"{cfg['memory_mb']}m",
        "--cpus", str(cfg["cpus"]), "--pids-limit", "512",
        "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
        "--read-only",
        "--tmpfs", f"/tmp:rw,nosuid,nodev,noexec,size={cfg.get('tmpfs_size_mb', 64)}m",
        "--env-file", cfg["env_file"], *mounts(cfg),
        "--network", cfg["network"],
    ]  # fmt: skip


def replica_name(replica, port):
    return f"{NAME}-{replica}-{port}"


def replica_port(cfg: dict[str, Any], replica: int, old: Container | None) -> int:
    """The port a replica's new container starts on: the other one of its pair (port_base
    or spare_port_base, plus replica - 1) from its serving container `old`, if any."""
    primary = cfg["port_base"] + replica - 1
    return cfg["spare_port_base"] + replica - 1 if old and old["port"] == primary else primary


def replica_run(cfg: dict[str, Any], image: str, digest: str | None, replica: int,
                port: int) -> list[str]:  # fmt: skip
    """`docker run` of one replica, labelled with what `containers()` reads back."""
    return [
        "docker", "run", "--detach", "--name", replica_name(replica, port),
        "--restart", "unless-stopped",
        *confined(cfg),
        "--publish", f"127.0.0.1:{port}:{cfg['container_port']}",
        "--log-driver", "json-file", "--log-opt", "max-size=10m", "--log-opt", "max-file=5",
        "--stop-timeout", str(cfg.get("stop_timeout_seconds", 30)),
        "--label", "prodstack.role=api",
        "--label", f"prodstack.replica={replica}",
        "--label", f"prodstack.port={port}",
        "--label", f"prodstack.image={image}",
        "--label", f"prodstack.digest={digest or ''}",
        "--label", f"prodstack.config={cfg['hash']}",
        image, "serve",
    ]  # fmt: skip


def one_off_run(cfg: dict[str, Any], image: str, command: str,
                env: Sequence[str] = ()) -> list[str]:  # fmt: skip
    """`docker run` of the image's `command` (migrate, migrate-stop, schema-version) once,
    named after it, confined like a replica, its output read by the caller."""
    return ["docker", "run", "--rm", "--name", f"{NAME}-{command}", *confined(cfg), *env,
            "--log-driver", "none", image, command]  # fmt: skip


def upstream_text(ports: Iterable[int]) -> str:
    """The nginx upstream file for exactly these ports."""
    lines = [f"server 127.0.0.1:{p} max_fails=3 fail_timeout=30s;\n" for p in sorted(ports)]
    if not lines:
        # nginx refuses an empty upstream; a closed port answers 502 until a replica exists.
        lines = ["server 127.0.0.1:9 down;\n"]
    return "# Managed by prodstack-release: the replicas nginx sends traffic to.\n" + "".join(lines)


# How long one migration waits for a table lock before it gives up (PostgreSQL's
# lock_timeout): an ALTER queued behind a long transaction blocks every read queued after it.
MIGRATE_LOCK_TIMEOUT_SECONDS = 10
MIGRATE_STOP_TIMEOUT = 30


def migrate_env(timeout):
    """The migrate run's server-side bounds (the image contract's MIGRATE_* variables):
    PostgreSQL cancels a statement past migrate_timeout_seconds itself, so nothing of it
    outlives the run even when the container is killed."""
    return ["--env", f"MIGRATE_LOCK_TIMEOUT_SECONDS={min(MIGRATE_LOCK_TIMEOUT_SECONDS, timeout)}",
            "--env", f"MIGRATE_STATEMENT_TIMEOUT_SECONDS={timeout}"]  # fmt: skip


# --- Release history ------------------------------------------------------------------------


def utc_now():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def local_user():
    user = os.environ.get("SUDO_USER")
    if not user:
        try:
            user = pwd.getpwuid(os.getuid()).pw_name
        except KeyError:
            user = str(os.getuid())
    return f"{user}@{os.uname().nodename}"


def version_of(ref):
    """A release's version: the image tag, or the short digest of an untagged reference."""
    if ref.startswith("sha256:"):
        return ref[:19]
    name = ref.rsplit("/", 1)[-1]
    if "@" in name:
        return name.split("@", 1)[1][:19]
    return name.rsplit(":", 1)[1] if ":" in name else "latest"


def new_entry(releases, image, digest, kind, *, by=None, revision=None, level=None,
              version=None):  # fmt: skip
    current = releases[-1] if releases else None
    return {
        "version": version or version_of(image), "image": image, "digest": digest,
        "deployed_at": utc_now(), "deployed_by": by or local_user(),
        "git_revision": revision, "migration_level": level, "kind": kind,
        "replaced": current["version"] if current else None,
    }  # fmt: skip


def undo_target(releases):
    """The release a bare `rollback` goes to: the one serving before the last deploy. After
    a rollback it is the release serving now, so a second rollback changes nothing."""
    for i in range(len(releases) - 1, -1, -1):
        if releases[i]["kind"] == "deploy":
            return releases[i - 1] if i > 0 else None
    return None


def find_release(releases, wanted):
    """The newest entry whose version, reference or digest (or a prefix of it) is `wanted`."""
    for entry in reversed(releases):
        digest = entry.get("digest") or ""
        if wanted in (entry["version"], entry["image"], digest) or (
            wanted.startswith("sha256:") and len(wanted) >= 19 and digest.startswith(wanted)
        ):
            return entry
    return None


class Refused(Exception):
    """A rollback that must not run; the message says why and what to do instead."""


def plan_rollback(releases: list[Entry], to: str | None = None) -> Entry | None:
    """The entry to roll back to, None when that release serves already, or Refused."""
    current = releases[-1] if releases else None
    if current is None:
        raise Refused("no release recorded on this host; nothing to roll back to")
    if to:
        target = find_release(releases, to)
        if target is None:
            known = ", ".join(dict.fromkeys(e["version"] for e in reversed(releases)))
            raise Refused(f"{to} is not in this host's release history (known, newest "
                          f"first: {known}); see `prodstack-release history`")  # fmt: skip
    else:
        target = undo_target(releases)
        if target is None:
            raise Refused(f"{current['version']} is the first release recorded on this host; "
                          "there is nothing before it to roll back to")  # fmt: skip
    if target.get("digest") and target["digest"] == current.get("digest"):
        return None
    return target


def level_key(level):
    """Migration levels compare as numbers when both are, else in name order (0001_x, ...)."""
    text = str(level)
    return (0, int(text), "") if text.isdigit() else (1, 0, text)


def migration_problem(target, db_level):
    """Why rolling back to `target` is refused, or None. Migrations are forward-only: a
    release older than the database's schema would run against tables it does not know."""
    level = target.get("migration_level")
    if level is None or db_level is None or level_key(level) >= level_key(db_level):
        return None
    return (
        f"refused: {target['version']} was released at migration level {level}, but the "
        f"database is at {db_level} now, and migrations only go forward. Roll back to a "
        f"release at level {db_level} or later (`prodstack-release history`), or fix forward."
    )


def kept_digests(releases, keep):
    """The images of the newest `keep` releases (by when each last served), current first."""
    kept = []
    for entry in reversed(releases):
        digest = entry.get("digest")
        if digest and digest not in kept:
            kept.append(digest)
        if len(kept) >= keep:
            break
    return kept


def serving_set(cfg, current):
    """Each replica's container that serves: the one nginx routes to. A run interrupted
    after starting a replacement leaves a second running container of that replica, not
    in the upstream: it is a leftover, never mistaken for the serving one (whose port and
    name a new start would then take over). A replica nginx has no port for falls back
    to any running container of it."""
    routed = set(read_upstream(cfg))
    serving = {}
    for c in sorted(current, key=lambda c: c["port"] not in routed):
        if c["running"] and c["replica"] not in serving:
            serving[c["replica"]] = c
    return serving


class ReplicaFailed(Exception):
    def __init__(self, replaced):
        super().__init__(replaced)
        self.replaced = replaced


def headroom_problem(cfg: dict[str, Any], mem_available_mb: int) -> str | None:
    """Why this host can't run a second full set next to the serving one, or None.
    `mem_available_mb`: the kernel's MemAvailable now."""
    need = cfg["replicas"] * cfg["memory_mb"]
    available = mem_available_mb - RESERVE_MB
    if need <= available:
        return None
    return (
        f"blue_green needs room for a second full set: {cfg['replicas']} replicas x "
        f"{cfg['memory_mb']} MB = {need} MB, but only {max(available, 0)} MB are available "
        f"(MemAvailable {mem_available_mb} MB minus {RESERVE_MB} MB kept for the system). "
        "Refused before any change; the current set keeps serving. Use "
        "deploy_strategy=rolling, fewer replicas or container_memory_mb, or a bigger host."
    )


def announce(kind, image, digest, current, reason):
    """The deploy's first line: which release it replaces with which."""
    version = version_of(image)
    if current is None:
        log(f"{kind} {version} ({digest[:19]}): the first release recorded on this host")
    elif current.get("digest") == digest:
        log(f"{kind} {version} ({digest[:19]}): the release serving now, replicas replaced "
            f"({reason or 'forced'})")  # fmt: skip
    else:
        log(f"{kind} {version} ({digest[:19]}) replaces {current['version']} "
            f"({(current.get('digest') or '?')[:19]}, {current['kind']} of "
            f"{current['deployed_at']})")  # fmt: skip
        if kind == "deploy" and current["kind"] == "rollback":
            log(f"note: {current['version']} serves after a rollback from "
                f"{current['replaced']}; this deploy replaces it with {version}")  # fmt: skip


def operator(by=None):
    """Who runs this: --by (the prodstack CLI passes the operator), else
    PRODSTACK_DEPLOY_BY (pyinfra's deploy sets it), else the sudo user, else the login user."""
    return by or os.environ.get("PRODSTACK_DEPLOY_BY") or os.environ.get("SUDO_USER") \
        or getpass.getuser()


def describe_lock(held):
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(held.get("since", 0)))
    return f"deploy lock held by {held.get('by')} since {since}: {json.dumps(held.get('message'))}"


def hold_run_lock(handle, command):
    """One prodstack-release run at a time; a second one says what it waits for."""
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        log(f"{command}: waiting for another prodstack-release run on this host to finish")
        fcntl.flock(handle, fcntl.LOCK_EX)


class Executor(Protocol):
    """The seam between the rollout and the host: `Host` on a real one, a stand-in in the
    unit tests (tests/host/test_release_rollout.py)."""

    def run(self, args: Sequence[str], *, check: bool = True,
            timeout: float | None = None) -> subprocess.CompletedProcess[str]: ...  # fmt: skip

    def ready(self, port: int) -> bool: ...

    def mem_available_mb(self) -> int: ...

    def sleep(self, seconds: float) -> None: ...

    def time(self) -> float: ...

    def monotonic(self) -> float: ...


class Host:
    """What the rollout does to this host besides its own files: run a program (docker,
    nginx, systemctl, systemd-run), ask a replica's /health/ready, read the memory left,
    and the clock. Tests hand `Release` a stand-in with the same methods."""

    def run(self, args: Sequence[str], *, check: bool = True,
            timeout: float | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
        """Run `args` (output captured as text). check: raise RuntimeError on a non-zero
        exit; timeout: subprocess.TimeoutExpired after that many seconds."""
        result = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed: {result.stderr.strip()}")
        return result

    def ready(self, port: int) -> bool:
        """One GET of http://127.0.0.1:PORT/health/ready: True on 200."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/ready",
                                        timeout=2) as response:  # fmt: skip
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def mem_available_mb(self) -> int:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) // 1024
        return 0

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()


class Release:
    """The rollout and the release history on this host. Everything it does to the host
    outside its own state files goes through `host` (processes, readiness, memory, the
    clock); its state lives under `state`, its settings in `config` (release.json)."""

    def __init__(self, host: Executor, state: str = STATE, config: str = CONFIG) -> None:
        self.host = host
        self.state = state
        self.config = config

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.host.run(args, check=check)

    def containers(self) -> list[Container]:
        """The API containers on this host, from their labels."""
        ids = self.run("docker", "ps", "-aq", "--filter", "label=prodstack.role=api").stdout.split()
        if not ids:
            return []
        found: list[Container] = []
        for c in json.loads(self.run("docker", "inspect", *ids).stdout):
            labels = c["Config"]["Labels"] or {}
            found.append(
                {
                    "name": c["Name"].lstrip("/"),
                    "replica": int(labels.get("prodstack.replica", 0)),
                    "port": int(labels.get("prodstack.port", 0)),
                    "image": labels.get("prodstack.image", ""),
                    "digest": labels.get("prodstack.digest", ""),
                    "config": labels.get("prodstack.config", ""),
                    "running": c["State"]["Running"],
                }
            )
        return sorted(found, key=lambda c: (c["replica"], not c["running"]))

    def write_upstream(self, cfg, ports):
        """Point nginx at exactly these ports, then reload it (graceful: in-flight requests
        finish)."""
        path = cfg["upstream_file"]
        old = None
        if os.path.exists(path):
            with open(path) as f:
                old = f.read()
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path + ".tmp", "w") as f:
            f.write(upstream_text(ports))
        os.replace(path + ".tmp", path)
        if self.run("nginx", "-t", "-q", check=False).returncode != 0:
            if old is not None:
                with open(path, "w") as f:
                    f.write(old)
            raise RuntimeError("nginx -t failed with the new upstream; restored the old one")
        if self.run("systemctl", "is-active", "-q", "nginx", check=False).returncode == 0:
            self.run("systemctl", "reload", "nginx")
        write_targets(cfg, ports)

    def in_sync(self, cfg, image, current, digest=None):
        digest = digest or self.image_id(image)
        baking = self.baking()
        current = [c for c in current if c["name"] not in baking]
        serving = {c["replica"]: c for c in current if c["running"]}
        wanted = set(range(1, cfg["replicas"] + 1))
        if set(serving) != wanted or len(current) != len(wanted):
            return f"replicas {sorted(serving)} != {sorted(wanted)}"
        for c in serving.values():
            if not same_image(c, image, digest):
                return f"replica {c['replica']} runs {c['image']}"
            if c["config"] != cfg["hash"]:
                return f"replica {c['replica']} has old settings"
        if read_upstream(cfg) != sorted(c["port"] for c in serving.values()):
            return "nginx upstream differs from the running replicas"
        return None

    def start(self, cfg, image, replica, port):
        name = replica_name(replica, port)
        if port in read_upstream(cfg):
            # Starting here would remove the container nginx routes to.
            raise RuntimeError(f"refusing to start on 127.0.0.1:{port}: nginx routes to it")
        self.run("docker", "rm", "-f", name, check=False)
        self.run(*replica_run(cfg, image, self.image_id(image), replica, port))
        return name

    def wait_ready(self, cfg, name, port):
        deadline = self.host.monotonic() + cfg["ready_timeout_seconds"]
        while self.host.monotonic() < deadline:
            state = self.run("docker", "inspect", "-f", "{{.State.Status}}", name,
                             check=False).stdout  # fmt: skip
            if state.strip() in ("exited", "dead", "restarting"):
                return False
            if self.host.ready(port):
                return True
            self.host.sleep(0.5)
        return False

    def gate(self, cfg, replica, name, port):
        """A new replica's readiness gate; on failure its last log lines are said."""
        if self.wait_ready(cfg, name, port):
            return True
        logs = self.run("docker", "logs", "--tail", "20", name, check=False)
        log(f"replica {replica}: not ready within {cfg['ready_timeout_seconds']}s:\n"
            f"{logs.stdout}{logs.stderr}")  # fmt: skip
        return False

    def stop(self, cfg, name):
        self.run("docker", "stop", "--time", str(cfg.get("stop_timeout_seconds", 30)), name,
                 check=False)  # fmt: skip
        self.run("docker", "rm", "-f", name, check=False)

    def migrate(self, cfg, image):
        """Run migrations once, confined like a replica and bounded in time: a migration stuck
        on a lock gives up after its lock_timeout, any statement after migrate_timeout_seconds
        (on the server), and a run past migrate_timeout_seconds is stopped, its database
        session terminated (`migrate-stop`), and the deploy aborts."""
        timeout = cfg["migrate_timeout_seconds"]
        log(f"migrate with {image} (at most {timeout}s)")
        result = self.one_off(cfg, image, "migrate", timeout, migrate_env(timeout))
        if result is None:
            self.stop_migrate_session(cfg, image)
            log(f"migrate did not finish within {timeout}s (migrate_timeout_seconds); stopped it")
            return False
        if result.returncode != 0:
            log(f"migrate failed:\n{result.stdout}{result.stderr}")
            return False
        return True

    def one_off(self, cfg, image, command, timeout, env=()):
        """Run the image's `command` once in a container confined like a replica; None when
        it did not finish within `timeout` seconds (its container is removed then)."""
        name = f"{NAME}-{command}"
        self.run("docker", "rm", "-f", name, check=False)
        try:
            return self.host.run(one_off_run(cfg, image, command, env), check=False,
                                 timeout=timeout)  # fmt: skip
        except subprocess.TimeoutExpired:
            self.run("docker", "rm", "-f", name, check=False)
            return None

    def stop_migrate_session(self, cfg, image):
        """Killing the container leaves its PostgreSQL session queued on its lock until the
        server notices: terminate it. An image without `migrate-stop` (bring your own app) is
        said, not fatal: the statement_timeout still ends it."""
        result = self.one_off(cfg, image, "migrate-stop", MIGRATE_STOP_TIMEOUT)
        if result is None:
            log("migrate-stop did not answer: the migrate session ends at its statement_timeout")
            return
        detail = (result.stderr or result.stdout).strip()[-500:]
        if result.returncode == 0:
            log(f"migrate-stop: {detail}")
        else:
            log(f"migrate-stop failed ({result.returncode}): {detail}; the migrate session ends "
                "at its statement_timeout")  # fmt: skip

    def schema_version(self, cfg, image):
        """The database's schema version now, from the image's `schema-version` command (one
        line on stdout), confined like a replica; None when the image has no such command."""
        result = self.one_off(cfg, image, "schema-version", SCHEMA_VERSION_TIMEOUT)
        if result is None:
            return None
        lines = result.stdout.strip().splitlines()
        if result.returncode != 0 or not lines:
            return None
        return lines[-1].strip()[:200] or None

    def image_id(self, ref: str | None) -> str | None:
        """The local image ID (`sha256:...`) of a reference, or None when it is not here."""
        if not ref:
            return None
        result = self.run("docker", "image", "inspect", "--format", "{{.Id}}", ref, check=False)
        return result.stdout.strip() or None if result.returncode == 0 else None

    def runnable(self, entry):
        """How to start a recorded release: its reference while that still names the recorded
        image, else the image ID (a tag moved to another build); None once the image is gone."""
        if not entry or not entry.get("digest"):
            return None
        if self.image_id(entry["image"]) == entry["digest"]:
            return entry["image"]
        return entry["digest"] if self.image_id(entry["digest"]) else None

    def legacy_history(self):
        """Entries for the `current`/`previous` files of earlier versions of this script."""
        releases: list[Entry] = []
        for name in ("previous", "current"):
            path = os.path.join(self.state, name)
            try:
                with open(path) as f:
                    ref = f.read().strip()
                at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(os.path.getmtime(path)))
            except FileNotFoundError:
                continue
            if not ref or (releases and releases[-1]["image"] == ref):
                continue
            releases.append({
                "version": version_of(ref), "image": ref, "digest": self.image_id(ref),
                "deployed_at": at, "deployed_by": None, "git_revision": None,
                "migration_level": None, "kind": "deploy",
                "replaced": releases[-1]["version"] if releases else None,
            })  # fmt: skip
        return releases

    def read_history(self) -> list[Entry]:
        try:
            with open(os.path.join(self.state, HISTORY)) as f:
                return json.load(f)["releases"]
        except FileNotFoundError:
            return self.legacy_history()

    def write_history(self, releases):
        self.set_state(HISTORY, json.dumps({"releases": releases[-HISTORY_LIMIT:]}, indent=1))
        # The history now holds what the files of earlier versions said.
        for name in ("current", "previous"):
            try:
                os.remove(os.path.join(self.state, name))
            except FileNotFoundError:
                pass

    def set_state(self, name, value):
        os.makedirs(self.state, exist_ok=True)
        with open(os.path.join(self.state, name + ".tmp"), "w") as f:
            f.write(value + "\n")
        os.replace(os.path.join(self.state, name + ".tmp"), os.path.join(self.state, name))

    def replace(self, cfg, image, force):
        """Replace replicas one at a time. Returns the replicas replaced, or raises on failure."""
        serving = serving_set(cfg, self.containers())
        upstream = {r: c["port"] for r, c in serving.items()}
        digest = self.image_id(image)
        replaced: list[int] = []
        for replica in range(1, cfg["replicas"] + 1):
            old = serving.get(replica)
            if (
                old
                and not force
                and same_image(old, image, digest)
                and old["config"] == cfg["hash"]
                and old["port"] in read_upstream(cfg)
            ):
                continue
            port = replica_port(cfg, replica, old)
            log(f"replica {replica}: starting {image} on 127.0.0.1:{port}")
            name = self.start(cfg, image, replica, port)
            if not self.gate(cfg, replica, name, port):
                self.stop(cfg, name)
                raise ReplicaFailed(replaced)
            upstream[replica] = port
            self.write_upstream(cfg, upstream.values())
            log(f"replica {replica}: serving on {port}")
            if old:
                self.host.sleep(cfg["drain_seconds"])
                self.stop(cfg, old["name"])
            replaced.append(replica)
        # Scale down, then remove anything left over (stopped or superseded containers).
        for replica in [r for r in upstream if r > cfg["replicas"]]:
            del upstream[replica]
            self.write_upstream(cfg, upstream.values())
            self.host.sleep(cfg["drain_seconds"])
        for c in self.containers():
            if c["port"] not in upstream.values() or c["replica"] > cfg["replicas"]:
                self.stop(cfg, c["name"])
        self.write_upstream(cfg, upstream.values())
        return replaced

    def stop_all(self, cfg):
        """nginx answers 502 at once, then every replica stops: nothing writes any more."""
        self.write_upstream(cfg, [])
        for c in self.containers():
            self.stop(cfg, c["name"])
            log(f"stopped {c['name']}")
        return 0

    def baking(self) -> set[str]:
        """The names of the containers of the set that bakes, if one does."""
        bake = self.read_bake()
        return set(bake["containers"]) if bake else set()

    def read_bake(self) -> Bake | None:
        try:
            with open(os.path.join(self.state, "bake.json")) as f:
                return json.load(f)
        except FileNotFoundError:
            return None

    def write_bake(self, bake):
        if bake is None:
            try:
                os.remove(os.path.join(self.state, "bake.json"))
            except FileNotFoundError:
                pass
            return
        self.set_state("bake.json", json.dumps(bake))

    def schedule_retire(self, seconds):
        self.run("systemctl", "stop", f"{RETIRE_UNIT}.timer", f"{RETIRE_UNIT}.service", check=False)
        self.run("systemctl", "reset-failed", f"{RETIRE_UNIT}.service", check=False)
        self.run(
            "systemd-run", f"--unit={RETIRE_UNIT}", f"--on-active={max(1, int(seconds))}s",
            "--timer-property=AccuracySec=1s", "--description=prodstack: end the blue/green bake",
            common.command("prodstack-release"), "retire",
        )  # fmt: skip

    def resume_bake(self, cfg):
        """At boot: a transient retire timer does not survive a reboot, so end a bake that is
        over, or schedule the rest of it again (prodstack-release-resume.service runs this)."""
        bake = self.read_bake()
        if bake is None:
            return
        left = bake["until"] - self.host.time()
        if left <= 5:
            self.finish_bake(cfg)
        else:
            self.schedule_retire(left)
            log(f"bake of the {bake['image']} set resumed: it ends in {int(left)}s")

    def finish_bake(self, cfg, *, early=False):
        """Stop the set that was baking: its release is accepted."""
        bake = self.read_bake()
        if bake is None:
            return
        # The timer may fire a moment before the recorded end; a few seconds early is the end.
        if not early and self.host.time() < bake["until"] - 5:
            return
        for name in bake["containers"]:
            self.stop(cfg, name)
        self.write_bake(None)
        self.run("systemctl", "stop", f"{RETIRE_UNIT}.timer", check=False)
        log(f"bake over: stopped the {bake['image']} set")

    def blue_green(self, cfg, image, previous=None):
        """Start the whole new set beside the old one, gate it, switch nginx in one reload.
        Returns the switch time in seconds, or None when a replica failed its check."""
        serving = {}
        for c in self.containers():
            if c["running"] and c["port"] in read_upstream(cfg) and c["replica"] not in serving:
                serving[c["replica"]] = c
        new = []
        for replica in range(1, cfg["replicas"] + 1):
            old = serving.get(replica)
            port = replica_port(cfg, replica, old)
            log(f"replica {replica}: starting {image} on 127.0.0.1:{port}")
            new.append((replica, self.start(cfg, image, replica, port), port))
        for replica, name, port in new:
            if not self.gate(cfg, replica, name, port):
                for _, other, _ in new:
                    self.stop(cfg, other)
                return None
        started = self.host.monotonic()
        self.write_upstream(cfg, [port for _, _, port in new])
        switched = self.host.monotonic() - started
        self.set_state("last-switch.json", json.dumps({"action": "switch", "seconds": switched}))
        names = {name for _, name, _ in new}
        old_set = [c["name"] for c in self.containers() if c["name"] not in names]
        bake = cfg.get("bake_seconds", 0)
        if old_set and bake == 0:
            log(f"switched nginx to the new set in {switched:.3f}s; no bake: stopping the old set")
            self.host.sleep(cfg["drain_seconds"])
            for name in old_set:
                self.stop(cfg, name)
        elif old_set:
            self.write_bake({"image": (previous or {}).get("image"),
                        "digest": (previous or {}).get("digest"), "containers": old_set,
                        "until": self.host.time() + bake})  # fmt: skip
            self.schedule_retire(bake)
            log(f"switched nginx to the new set in {switched:.3f}s; the old set bakes for {bake}s")
        return switched

    def switch_back(self, cfg, bake):
        """Rollback during the bake: nginx back to the old set at once, then stop the new one."""
        old = [c for c in self.containers() if c["name"] in bake["containers"] and c["running"]]
        if len(old) < len(bake["containers"]):
            # Some of the baking set is gone (stopped by hand, not back after a reboot): nginx
            # must not be pointed at fewer replicas, or at none.
            log(f"{len(old)} of the {len(bake['containers'])} baking containers run; deploying "
                f"{bake['image']} instead")  # fmt: skip
            return None
        for c in old:
            if not self.wait_ready(cfg, c["name"], c["port"]):
                log(f"{c['name']} of the baking set is not ready; deploying {bake['image']} "
                    "instead")  # fmt: skip
                return None
        started = self.host.monotonic()
        newer = [c["name"] for c in self.containers() if c["name"] not in bake["containers"]]
        self.write_upstream(cfg, [c["port"] for c in old])
        switched = self.host.monotonic() - started
        self.set_state("last-switch.json", json.dumps({"action": "rollback", "seconds": switched}))
        log(f"rolled back: nginx serves the {bake['image']} set again, switched in {switched:.3f}s")
        self.write_bake(None)
        self.run("systemctl", "stop", f"{RETIRE_UNIT}.timer", check=False)
        self.host.sleep(cfg["drain_seconds"])
        for name in newer:
            self.stop(cfg, name)
        return switched

    def prune(self, releases, keep):
        """Remove the images of releases older than the newest `keep` (by image ID: every tag
        of such an image). Images that never became a release are not touched."""
        kept = set(kept_digests(releases, keep))
        for digest in dict.fromkeys(e["digest"] for e in releases if e.get("digest")):
            if digest in kept:
                continue
            info = self.run("docker", "image", "inspect", digest, check=False)
            if info.returncode != 0:
                continue
            tags = json.loads(info.stdout)[0].get("RepoTags") or []
            for ref in tags or [digest]:
                # No -f: an image a container still uses (a baking set) stays.
                if self.run("docker", "rmi", ref, check=False).returncode == 0:
                    log(f"pruned {ref} ({digest[:19]}): older than the newest {keep} releases")
            if self.image_id(digest):
                log(f"{digest[:19]} stays on this host: a container or another image uses it")

    def deploy(self, image, force=False, run_migrate=True, *, by=None, revision=None, kind="deploy",
               target=None):  # fmt: skip
        """Deploy `image`; `target` is the history entry a rollback goes to."""
        cfg = load_config(self.config)
        digest = self.image_id(image)
        if digest is None:
            log(f"image {image} is not on this host")
            return 1
        releases = self.read_history()
        current = releases[-1] if releases else None
        reason = self.in_sync(cfg, image, self.containers(), digest)
        if reason is None and not force:
            log(f"{image}: already in sync")
            return 0
        announce(kind, (target or {}).get("image") or image, digest, current, reason)
        strategy = cfg.get("strategy", "rolling")
        # A new deploy accepts the release that is still baking.
        self.finish_bake(cfg, early=True)
        if strategy == "blue_green":
            problem = headroom_problem(cfg, self.host.mem_available_mb())
            if problem:
                log(problem)
                return 1
        log(f"deploying {image} ({reason or 'forced'}, {strategy})")
        if run_migrate and not self.migrate(cfg, image):
            log("aborted before replacing any replica; the old version keeps serving")
            return 1
        if strategy == "blue_green":
            if self.blue_green(cfg, image, current) is None:
                log("health check failed: aborted before the switch; the old set keeps serving")
                return 1
        else:
            try:
                self.replace(cfg, image, force)
            except ReplicaFailed as failure:
                return self.restore(cfg, failure, self.runnable(current), image)
        if current is None or current.get("digest") != digest:
            if target is not None:
                entry = new_entry(releases, target["image"], digest, kind, by=by,
                                  revision=target.get("git_revision"),
                                  level=target.get("migration_level"), version=target["version"])
            else:
                level = self.schema_version(cfg, image) if run_migrate else None
                entry = new_entry(releases, image, digest, kind, by=by, revision=revision,
                                  level=level)  # fmt: skip
            releases = releases + [entry]
            self.write_history(releases)
            log(f"recorded {kind} of {entry['version']} (migration level "
                f"{entry['migration_level'] or 'unknown'})")  # fmt: skip
        elif not os.path.exists(os.path.join(self.state, HISTORY)):
            self.write_history(releases)
        self.prune(releases, cfg.get("keep_releases", DEFAULT_KEEP_RELEASES))
        log(f"{image}: {cfg['replicas']} replicas serving")
        return 0

    def restore(self, cfg, failure, current_image, image):
        log("health check failed: aborted; the old version keeps serving")
        if failure.replaced and current_image and current_image != image:
            log(f"putting replicas {failure.replaced} back on {current_image}")
            try:
                self.replace(cfg, current_image, False)
            except ReplicaFailed:
                log(f"could not restore {current_image}; run `prodstack-release status`")
        return 1

    def rollback(self, to=None, by=None):
        """Undo the last deploy, or go to the retained release `to`. See the module docstring."""
        cfg = load_config(self.config)
        releases = self.read_history()
        try:
            target = plan_rollback(releases, to)
        except Refused as refused:
            log(str(refused))
            return 1
        current = releases[-1]
        if target is None:
            if to:
                log(f"{current['version']} serves already; nothing to do")
            else:
                log(f"already rolled back: {current['version']} serves, the release before the "
                    "last deploy; nothing to do (`rollback --to VERSION` goes further back, "
                    "`prodstack-release history` lists them)")  # fmt: skip
            return 0
        image = self.runnable(target)
        if image is None:
            log(f"refused: the image of {target['version']} "
                f"({(target['digest'] or '?')[:19]}) is no "
                f"longer on this host (keep_releases {cfg.get('keep_releases')}); deploy it "
                "again instead")  # fmt: skip
            return 1
        db_level = self.schema_version(cfg, self.runnable(current) or image)
        problem = migration_problem(target, db_level)
        if problem:
            log(problem)
            return 1
        if target.get("migration_level") is None or db_level is None:
            log(f"migration level not checked: {target['version']} recorded "
                f"{target.get('migration_level') or 'none'}, the database reports "
                f"{db_level or 'none'} (the image's `schema-version`)")  # fmt: skip
        log(f"rollback from {current['version']} to {target['version']} "
            f"({(target['digest'] or '?')[:19]}, {target['kind']} of {target['deployed_at']})")
        bake = self.read_bake()
        if bake is not None and bake.get("digest") == target["digest"]:
            if self.switch_back(cfg, bake) is not None:
                self.write_history(releases + [new_entry(
                    releases, target["image"], target["digest"], "rollback", by=by,
                    revision=target.get("git_revision"), level=target.get("migration_level"),
                    version=target["version"])])  # fmt: skip
                return 0
            self.write_bake(None)
        # Migrations are forward-only and the old image runs against the migrated schema.
        return self.deploy(image, run_migrate=False, by=by, kind="rollback", target=target)

    def print_history(self, releases, as_json):
        present = {}
        for entry in releases:
            digest = entry.get("digest")
            if digest and digest not in present:
                present[digest] = self.image_id(digest) is not None
        rows = [{**e, "retained": present.get(e.get("digest"), False)} for e in releases]
        if as_json:
            print(json.dumps({"releases": rows}, indent=2))
            return
        if not rows:
            print("no release recorded on this host")
            return
        header = ("", "version", "kind", "deployed_at", "deployed_by", "git", "migration",
                  "image")  # fmt: skip
        table = [header] + [
            ("*" if i == len(rows) - 1 else "", r["version"], r["kind"], r["deployed_at"],
             r["deployed_by"] or "-", (r["git_revision"] or "-")[:12],
             r["migration_level"] or "-",
             f"{(r['digest'] or '?')[:19]}{'' if r['retained'] else ' (pruned)'}")
            for i, r in enumerate(rows)
        ]  # fmt: skip
        widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
        for row in table:
            print("  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())

    def status(self, cfg_keep):
        releases = self.read_history()
        current: dict[str, Any] = dict(releases[-1]) if releases else {}
        target = None
        try:
            entry = plan_rollback(releases)
            target = entry["version"] if entry else None
        except Refused:
            pass
        return {
            "current": current.get("image"),
            **{k: current.get(k) for k in ("version", "digest", "deployed_at", "deployed_by",
                                           "git_revision", "migration_level", "kind")},
            "previous": releases[-2]["image"] if len(releases) > 1 else None,
            "rollback_to": target,
            "keep_releases": cfg_keep,
            "baking": self.read_bake(),
            "replicas": self.containers(),
        }  # fmt: skip

    def audit(self, event, by, **fields):
        """One record in this host's audit log (prodstack-audit). A failure to record is said,
        and does not stop the action."""
        if not os.path.exists(AUDIT):
            log(f"not recorded: {AUDIT} is missing (deploy the host again)")
            return
        args = [AUDIT, "record", "--by", by, event, *(f"{k}={v}" for k, v in fields.items())]
        try:
            result = self.run(*args, check=False)
        except OSError as error:
            log(f"not recorded in the audit log: {error}")
            return
        if result.returncode != 0:
            log(f"not recorded in the audit log: {result.stderr.strip()}")

    def lock_path(self):
        return os.path.join(self.state, "lock.json")

    def read_lock(self):
        try:
            with open(self.lock_path()) as f:
                return json.load(f)
        except FileNotFoundError:
            return None

    def lock_acquire(self, by, message):
        """Take the deploy lock, or refuse naming its holder. Creating the file with O_EXCL
        makes two operators' acquires race-free; the holder may change its message."""
        os.makedirs(self.state, exist_ok=True)
        entry = json.dumps({"by": by, "message": message, "since": self.host.time()})
        held = self.read_lock()
        if held is not None and held.get("by") != by:
            log(f"refused: {describe_lock(held)}")
            return 1
        if held is not None:
            self.set_state("lock.json", entry)
        else:
            try:
                fd = os.open(self.lock_path(), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                log(f"refused: {describe_lock(self.read_lock() or {})}")
                return 1
            with os.fdopen(fd, "w") as f:
                f.write(entry + "\n")
        self.audit("lock-acquire", by, message=message)
        log(f"acquired: {describe_lock(self.read_lock())}")
        return 0

    def lock_release(self, by, force):
        held = self.read_lock()
        if held is None:
            log("the deploy lock is not held")
            return 0
        if held.get("by") != by and not force:
            log(f"refused: {describe_lock(held)}; only its holder releases it (or --force)")
            return 1
        os.remove(self.lock_path())
        self.audit("lock-release", by, holder=held.get("by"), message=held.get("message"),
              forced=str(held.get("by") != by).lower())  # fmt: skip
        log(f"released the deploy lock of {held.get('by')}")
        return 0

    def refused_by_lock(self, command, by):
        """Why `command` may not run now (the lock is someone else's), or None. Said at once:
        a deploy never waits on the deploy lock."""
        held = self.read_lock()
        if held is None or held.get("by") == by:
            return None
        self.audit("lock-refused", by, command=command, holder=held.get("by"))
        return f"refused to {command}: {describe_lock(held)}"

    def replicas_report(self, cfg):
        """Each API container with its readiness (one /health/ready), and what nginx routes to."""
        upstream = read_upstream(cfg)
        baking = self.baking()
        found = []
        for c in self.containers():
            ready = c["running"] and self.host.ready(c["port"])
            found.append({**c, "ready": ready, "in_upstream": c["port"] in upstream,
                          "baking": c["name"] in baking})  # fmt: skip
        return {"strategy": cfg.get("strategy", "rolling"), "replicas_wanted": cfg["replicas"],
                "upstream": upstream, "bake": self.read_bake(), "replicas": found}  # fmt: skip

    def exec_once(self, cfg, command, by, interactive):
        """A one-off container of the current image with a replica's env and confinement,
        removed when it exits (also when this run is interrupted). Returns its exit code."""
        image = self.current_image()
        if not image:
            log("no current release recorded (or its image is gone); deploy one first")
            return 1
        name = f"{NAME}-{EXEC_ROLE}-{os.getpid()}"
        args = ["docker", "run", "--rm", "--name", name, "--label", f"prodstack.role={EXEC_ROLE}",
                *confined(cfg), "--log-driver", "none"]  # fmt: skip
        if interactive:
            args += ["--interactive"] + (["--tty"] if sys.stdin.isatty() else [])
        args += ["--entrypoint", command[0], image, *command[1:]]
        self.audit("exec", by, image=image, command=json.dumps(command))

        def remove(signum, _frame):
            self.run("docker", "rm", "-f", name, check=False)
            sys.exit(128 + signum)

        for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            signal.signal(signum, remove)
        return subprocess.run(args, stdin=None if interactive else subprocess.DEVNULL).returncode

    def current_image(self):
        """The image of the release serving now, if it is still on this host."""
        releases = self.read_history()
        return self.runnable(releases[-1]) if releases else None


def main():
    # A dropped SSH session hangs up on its commands: a rollout stopped half-way leaves two
    # sets or an unfinished switch, so it runs to its end (its log and history tell).
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    rel = Release(Host())
    parser = argparse.ArgumentParser(prog="prodstack-release")
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("deploy")
    d.add_argument("image")
    d.add_argument("--force", action="store_true", help="replace replicas even if in sync")
    d.add_argument("--no-migrate", action="store_true")
    d.add_argument("--revision", default=os.environ.get("PRODSTACK_DEPLOY_REVISION") or None,
                   help="the operator's git revision, recorded in the history "
                   "(default: $PRODSTACK_DEPLOY_REVISION)")
    d.add_argument("--by", default=os.environ.get("PRODSTACK_DEPLOY_BY") or None,
                   help="who deploys (default: $PRODSTACK_DEPLOY_BY, else the user here)")
    r = sub.add_parser("rollback")
    r.add_argument("--to", metavar="VERSION", help="a retained release (default: undo the "
                   "last deploy)")  # fmt: skip
    r.add_argument("--by", default=os.environ.get("PRODSTACK_DEPLOY_BY") or None,
                   help="who rolls back (default: $PRODSTACK_DEPLOY_BY, else the user here)")
    c = sub.add_parser("check")
    c.add_argument("image")
    for name in ("status", "history"):
        sub.add_parser(name).add_argument("--json", action="store_true")
    sub.add_parser("replicas")
    sub.add_parser("targets")
    sub.add_parser("retire")
    sub.add_parser("resume", help="at boot: reschedule or end an interrupted bake")
    sub.add_parser("stop")
    sub.add_parser("start")
    lk = sub.add_parser("lock")
    lk.add_argument("action", choices=("acquire", "release", "status"))
    lk.add_argument("-m", "--message", default="")
    lk.add_argument("--force", action="store_true", help="release someone else's lock")
    x = sub.add_parser("exec")
    x.add_argument("-i", "--interactive", action="store_true")
    x.add_argument("argv", nargs=argparse.REMAINDER)
    for p in (sub.choices["stop"], sub.choices["start"], lk, x):
        p.add_argument("--by", help="the operator (default: PRODSTACK_DEPLOY_BY, the sudo user)")
    args = parser.parse_args()

    if args.command == "check":
        reason = rel.in_sync(load_config(), args.image, rel.containers())
        print(reason or "in-sync")
        return 0 if reason is None else 1
    if args.command == "status":
        # JSON with or without --json: tools have read `status` as JSON since before the
        # history (`prodstack status` is the view for people).
        cfg = load_config() if os.path.exists(CONFIG) else {}
        print(json.dumps(rel.status(cfg.get("keep_releases", DEFAULT_KEEP_RELEASES)), indent=2))
        return 0
    if args.command == "history":
        rel.print_history(rel.read_history(), args.json)
        return 0
    if args.command == "replicas":
        print(json.dumps(rel.replicas_report(load_config()), indent=2))
        return 0
    if args.command == "targets":
        cfg = load_config()
        write_targets(cfg, read_upstream(cfg))
        return 0
    by = operator(getattr(args, "by", None))
    if args.command == "lock":
        if args.action == "status":
            print(json.dumps(rel.read_lock()))
            return 0
        if args.action == "acquire":
            if not args.message.strip():
                parser.error("lock acquire needs -m MESSAGE: why the lock is held")
            return rel.lock_acquire(by, args.message)
        return rel.lock_release(by, args.force)
    if args.command == "exec":
        argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
        if not argv:
            parser.error("exec needs a command: prodstack-release exec -- CMD ...")
        return rel.exec_once(load_config(), argv, by, args.interactive)
    if args.command not in ("retire", "resume"):
        refusal = rel.refused_by_lock(args.command, by)
        if refusal:
            log(refusal)
            return 1

    with open(LOCK, "w") as lock:
        hold_run_lock(lock, args.command)
        if args.command == "retire":
            rel.finish_bake(load_config())
            return 0
        if args.command == "resume":
            rel.resume_bake(load_config())
            return 0
        before = rel.current_image()
        code = run_locked(rel, args)
        rel.audit(args.command, by, result="ok" if code == 0 else f"failed ({code})",
              image=getattr(args, "image", None) or rel.current_image() or "",
              before=before or "")  # fmt: skip
        return code


def run_locked(rel, args):
    if args.command == "deploy":
        return rel.deploy(args.image, force=args.force, run_migrate=not args.no_migrate,
                      by=args.by, revision=args.revision)  # fmt: skip
    if args.command == "stop":
        return rel.stop_all(load_config())
    if args.command == "start":
        releases = rel.read_history()
        image = rel.runnable(releases[-1]) if releases else None
        if not image:
            log("no current release recorded (or its image is gone); deploy one first")
            return 1
        return rel.deploy(image, force=True)
    if args.command == "retire":
        rel.finish_bake(load_config())
        return 0
    return rel.rollback(args.to, args.by)


if __name__ == "__main__":
    sys.exit(main())
