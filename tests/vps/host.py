"""A throwaway systemd host for the VPS profile: a Debian rootfs run as a Docker container.

systemd is PID 1 and sshd listens on the container's bridge address, so pyinfra reaches it
exactly as it would reach a fresh VPS. The bare image holds only what a minimal Debian 12
cloud image has; everything else is installed by the deploy. A provisioned image (one per
role) also holds the packages the deploy installs, for the hosts whose tests are about
something other than a first install. Images are cached by tag.
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.support.docker import debootstrap_image, ensure_dockerd, image_exists, image_lock

REPO = Path(__file__).resolve().parents[2]
# Bump the suffix when HOST_PACKAGES or _prepare change, so cached images are rebuilt.
HOST_IMAGE = "prodstack/vps-host:bookworm-1"
HOST_PACKAGES = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "openssh-server",
    "python3",
    "sudo",
    "ca-certificates",
    "iproute2",
    "curl",
    "gnupg",
)
# The flags from shared/notes/environment.md: systemd as PID 1 without --privileged, and
# an anonymous volume at /var/lib/docker so that Docker runs inside the host.
RUN_FLAGS = (
    "--cap-add", "ALL",
    "--cap-drop", "SYS_RESOURCE",
    "--security-opt", "seccomp=unconfined",
    "--security-opt", "apparmor=unconfined",
    "--cgroupns=host",
    "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw",
    "-v", "/var/lib/docker",
    "--tmpfs", "/run",
    "--tmpfs", "/run/lock",
    "--tmpfs", "/tmp",
)  # fmt: skip
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "prodstack"


def _prepare(rootfs: Path) -> None:
    # A real Debian 12 VPS has the updates and security suites configured.
    (rootfs / "etc/apt/sources.list").write_text(
        "deb http://deb.debian.org/debian bookworm main\n"
        "deb http://deb.debian.org/debian bookworm-updates main\n"
        "deb http://deb.debian.org/debian-security bookworm-security main\n"
    )
    (rootfs / "root/.ssh").mkdir(mode=0o700, exist_ok=True)
    (rootfs / "etc/hostname").write_text("vps\n")
    # Units that make no sense in a container and only slow boot down.
    for unit in ("systemd-networkd-wait-online.service", "getty@tty1.service"):
        link = rootfs / "etc/systemd/system" / unit
        link.unlink(missing_ok=True)
        link.symlink_to("/dev/null")


def host_image() -> str:
    return debootstrap_image(
        HOST_IMAGE,
        HOST_PACKAGES,
        changes=('CMD ["/lib/systemd/systemd"]',),
        prepare=_prepare,
    )


@dataclass(frozen=True)
class Role:
    """What tasks/base.py's `packages_for` reads of a host's settings, for a host of the
    e2e tests: self-signed TLS and an off-site bucket, as tests/vps/conftest.py deploys."""

    name: str
    is_web: bool
    is_db: bool
    tls: str = "selfsigned"
    backup_s3_bucket: str | None = "prodstack-backups"
    grafana: bool = False


ROLES = {
    "single": Role("single", is_web=True, is_db=True),
    "web": Role("web", is_web=True, is_db=False),
    "db": Role("db", is_web=False, is_db=True),
}
# Left for each host's own deploy: installing PostgreSQL creates its cluster, whose system
# identifier is how pgBackRest (and prodstack-backup) tell one host's history from
# another's. Hosts cloned from one image with a cluster would share it, and a replacement
# host would take the lost host's off-site repository for its own.
PER_HOST_PACKAGES = ("postgresql",)
# Run in the builder container: packages are unpacked and configured as the deploy's apt
# step leaves them (their units enabled), but a policy-rc.d keeps every service stopped
# while apt runs, as there is no systemd in the builder. The apt lists stay, as they would
# after the deploy's `apt-get update`.
PROVISION = """set -e
printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
chmod 755 /usr/sbin/policy-rc.d
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
rm -f /usr/sbin/policy-rc.d
"""


def provisioned_image(role: str) -> str:
    """The host image with the packages the deploy installs on a host of `role` already
    installed (built once, cached by the package list).

    The e2e hosts that prove something other than a first install boot from it: a first
    deploy on the bare image spends most of its time in dpkg (measured on an idle 2-core
    machine: 177 s and 107 s of the host's CPU, against 77 s and 29 s from this image).
    tests/vps/test_e2e.py's host keeps booting the bare image, so every run still proves
    a first deploy onto a fresh Debian 12 host.

    Each role's image is a layer over the `common` one (what every role installs), so the
    packages they share are installed once, not once per role.
    """
    packages = role_packages(role)
    if role == COMMON:
        base = host_image()
    else:
        base = provisioned_image(COMMON)
        common = set(role_packages(COMMON))
        packages = [p for p in packages if p not in common]
    digest = hashlib.sha256("\0".join([base, PROVISION, *packages]).encode()).hexdigest()
    tag = f"{HOST_IMAGE}-{role}-{digest[:12]}"
    if image_exists(tag):
        return tag
    with image_lock(tag):
        if not image_exists(tag):
            _provision(tag, base, role, packages)
    return tag


COMMON = "common"


def role_packages(role: str) -> list[str]:
    """tasks/base.py's packages for a host of `role` (`common`: those of every role),
    without PER_HOST_PACKAGES."""
    from tasks.base import packages_for  # pyinfra/ is on sys.path (tests/vps/conftest.py)

    if role == COMMON:
        each = [packages_for(r) for r in ROLES.values()]  # type: ignore[arg-type]
        packages = [p for p in each[0] if all(p in other for other in each[1:])]
    else:
        packages = packages_for(ROLES[role])  # type: ignore[arg-type]
    return [p for p in packages if p not in PER_HOST_PACKAGES]


def _provision(tag: str, base: str, role: str, packages: list[str]) -> None:
    builder = f"prodstack-provision-{role}-{os.getpid()}"
    # Its own .deb cache: builders of the other roles run at the same time.
    archives = CACHE / f"{os.environ.get('PRODSTACK_APT_CACHE', 'vps-apt-archives')}-{role}"
    (archives / "partial").mkdir(parents=True, exist_ok=True)
    subprocess.run(["docker", "rm", "-f", builder], capture_output=True)
    try:
        built = subprocess.run(
            ["docker", "run", "--name", builder, "-v", f"{archives}:/var/cache/apt/archives",
             base, "/bin/sh", "-c", PROVISION, "provision", *packages],
            capture_output=True, text=True,
        )  # fmt: skip
        if built.returncode != 0:
            raise RuntimeError(f"provisioning {tag} failed ({built.returncode}):\n"
                               f"{built.stdout[-2000:]}\n{built.stderr[-3000:]}")  # fmt: skip
        subprocess.run(["docker", "commit", "-c", 'CMD ["/lib/systemd/systemd"]', builder, tag],
                       check=True, capture_output=True)  # fmt: skip
    finally:
        subprocess.run(["docker", "rm", "-f", builder], capture_output=True)


def ssh_keypair(directory: Path) -> Path:
    """An ed25519 key for the test host, created once and kept in `directory`."""
    key = directory / "id_ed25519"
    if not key.exists():
        directory.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "prodstack-test", "-f", str(key)],
            check=True,
        )
    return key


@dataclass
class Host:
    name: str
    address: str
    key: Path

    def run(self, script: str, *, check: bool = True, timeout: float = 300, input=None):
        """Run a shell script inside the host as root (out of band, not over SSH)."""
        result = subprocess.run(
            ["docker", "exec", "-i", self.name, "bash", "-c", script],
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"`{script}` exited {result.returncode}\n{result.stdout}\n{result.stderr}"
            )
        return result


def boot(name: str, key: Path, *, apt_cache: bool | str = True, timeout_s: float = 60,
         image: str | None = None) -> Host:
    """Boot the host container (from `image`, by default the bare host image), install the
    public key, wait for systemd and sshd.

    `apt_cache` names the .deb cache directory to share (True: the common one, or the one
    PRODSTACK_APT_CACHE names); hosts that install packages at the same time need one
    each, or apt's lock stops all but one.
    """
    ensure_dockerd()
    image = image or host_image()
    subprocess.run(["docker", "rm", "-f", "-v", name], capture_output=True)
    extra: list[str] = []
    if apt_cache:
        # Keep downloaded .debs between local runs (a fresh CI machine starts empty).
        # Each xdist worker boots its own shared host, at the same time as the others.
        worker = os.environ.get("PYTEST_XDIST_WORKER")
        common = os.environ.get("PRODSTACK_APT_CACHE", "vps-apt-archives")
        common += f"-{worker}" if worker else ""
        archives = CACHE / (apt_cache if isinstance(apt_cache, str) else common)
        (archives / "partial").mkdir(parents=True, exist_ok=True)
        extra += ["-v", f"{archives}:/var/cache/apt/archives"]
    subprocess.run(
        ["docker", "run", "-d", "--name", name, "--hostname", "vps", *RUN_FLAGS, *extra, image],
        check=True,
        capture_output=True,
    )
    address = subprocess.run(
        ["docker", "inspect", "-f", "{{.NetworkSettings.IPAddress}}", name],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    host = Host(name=name, address=address, key=key)
    pub = Path(str(key) + ".pub").read_text()
    host.run(
        "install -d -m 700 /root/.ssh && cat > /root/.ssh/authorized_keys "
        "&& chmod 600 /root/.ssh/authorized_keys",
        input=pub,
    )
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = host.run("systemctl is-system-running", check=False).stdout.strip()
        if state in ("running", "degraded") and _port_open(address, 22):
            return host
        time.sleep(0.5)
    raise RuntimeError(f"host {name} did not boot: systemd says {state!r}")


def destroy(name: str) -> None:
    subprocess.run(["docker", "rm", "-f", "-v", name], capture_output=True)


def _port_open(address: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False
