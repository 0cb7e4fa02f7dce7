"""A throwaway systemd host for the VPS profile: a Debian rootfs run as a Docker container.

systemd is PID 1 and sshd listens on the container's bridge address, so pyinfra reaches it
exactly as it would reach a fresh VPS. The image holds only what a minimal Debian 12 cloud
image has; everything else is installed by the deploy. Images are cached by tag.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.support.docker import debootstrap_image, ensure_dockerd

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


def boot(name: str, key: Path, *, apt_cache: bool | str = True, timeout_s: float = 60) -> Host:
    """Boot the host container, install the public key, wait for systemd and sshd.

    `apt_cache` names the .deb cache directory to share (True: the common one, or the one
    PRODSTACK_APT_CACHE names); hosts that install packages at the same time need one
    each, or apt's lock stops all but one.
    """
    ensure_dockerd()
    image = host_image()
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
