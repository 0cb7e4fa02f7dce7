"""A Docker engine and Debian-built base images, for tests that need real containers.

No registry is reachable from CI, so base images are built from Debian packages with
debootstrap and imported. Images are cached by tag: a second run reuses them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from filelock import FileLock

DEBIAN_MIRROR = os.environ.get("PRODSTACK_DEBIAN_MIRROR", "http://deb.debian.org/debian")

# Python runtime base for the app image: Debian's python3.11, the same minor version
# as the official python:3.11-slim default.
PYTHON_BASE_IMAGE = "prodstack/python-base:bookworm"
PYTHON_BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
# Test sessions on this machine (and their xdist workers) share one Docker engine.
LOCKS = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "prodstack" / "locks"


def image_lock(tag: str) -> FileLock:
    """Held while `tag` is built (or dockerd started): one builder per image, the others
    wait and reuse it."""
    LOCKS.mkdir(parents=True, exist_ok=True)
    return FileLock(str(LOCKS / (tag.replace("/", "_").replace(":", "_") + ".lock")))


def checkout_build_lock(repo: Path) -> FileLock:
    """Held while scripts/build-image.sh runs in `repo`: it rewrites app/requirements.txt
    and app/wheelhouse there, which two concurrent builds would interleave."""
    (repo / ".prodstack").mkdir(exist_ok=True)
    return FileLock(str(repo / ".prodstack" / "build-image.lock"))


def docker_available() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True).returncode == 0


def ensure_dockerd(timeout_s: float = 120.0) -> None:
    """Start dockerd in the background unless an engine already answers."""
    if docker_available():
        return
    with image_lock("dockerd"):  # one starter; xdist workers ask at the same moment
        if not docker_available():
            _start_dockerd(timeout_s)


DOCKERD_PIDFILE = Path("/var/run/docker.pid")
DOCKERD_LOG = Path("/var/log/prodstack-dockerd.log")


def clear_stale_pidfile(pidfile: Path = DOCKERD_PIDFILE) -> bool:
    """Remove a pid file that names no running dockerd; True if one was removed.

    A machine imaged after dockerd was killed keeps /var/run/docker.pid, and dockerd then
    refuses to start ("pid file found"). A pid file of a live dockerd is left alone.
    """
    try:
        text = pidfile.read_text().strip()
    except FileNotFoundError:
        return False
    try:
        comm = Path(f"/proc/{int(text)}/comm").read_text().strip()
    except (ValueError, OSError):
        comm = ""
    if comm == "dockerd":
        return False
    pidfile.unlink(missing_ok=True)
    return True


def _start_dockerd(timeout_s: float) -> None:
    dockerd = shutil.which("dockerd")
    if dockerd is None:
        raise RuntimeError("dockerd not found: install docker.io (scripts/setup.sh does)")
    clear_stale_pidfile()
    with open(DOCKERD_LOG, "ab") as log:
        start = log.tell()
        proc = subprocess.Popen([dockerd], stdout=log, stderr=log, start_new_session=True)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if docker_available():
            return
        if proc.poll() is not None:
            raise RuntimeError(
                f"dockerd exited with {proc.returncode}; its log ({DOCKERD_LOG}) says:\n"
                + _log_tail(start)
            )
        time.sleep(0.5)
    raise RuntimeError(
        f"dockerd did not answer `docker info` within {timeout_s:.0f}s; its log "
        f"({DOCKERD_LOG}) says:\n" + _log_tail(start)
    )


def _log_tail(start: int, lines: int = 20) -> str:
    with open(DOCKERD_LOG, "rb") as log:
        log.seek(start)
        return "\n".join(log.read().decode(errors="replace").splitlines()[-lines:])


def image_exists(tag: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", tag], capture_output=True).returncode == 0


def debootstrap_image(
    tag: str,
    packages: tuple[str, ...],
    *,
    changes: tuple[str, ...] = (),
    prepare=None,
    suite: str = "bookworm",
) -> str:
    """Build (once) a Docker image from a minbase Debian rootfs with extra packages.

    `prepare(rootfs: Path)` may edit the rootfs before it is imported.
    `changes` are `docker import -c` instructions such as 'CMD ["/lib/systemd/systemd"]'.
    """
    ensure_dockerd()
    if image_exists(tag):
        return tag
    with image_lock(tag):
        if not image_exists(tag):
            _debootstrap_import(tag, packages, changes, prepare, suite)
    return tag


def _debootstrap_import(tag, packages, changes, prepare, suite) -> None:
    with tempfile.TemporaryDirectory(prefix="prodstack-rootfs-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        subprocess.run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(packages)}",
                suite,
                str(rootfs),
                DEBIAN_MIRROR,
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        # Keep images small: apt lists and caches are rebuilt by `apt-get update`.
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for p in (rootfs / junk).glob("*"):
                if p.is_file():
                    p.unlink()
        if prepare is not None:
            prepare(rootfs)
        cmd = ["docker", "import"]
        for change in changes:
            cmd += ["-c", change]
        cmd += ["-", tag]
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        subprocess.run(cmd, stdin=tar.stdout, check=True, stdout=subprocess.DEVNULL)
        if tar.wait() != 0:
            raise RuntimeError(f"tar of {rootfs} failed")


def python_base_image() -> str:
    """The stand-in for python:3.11-slim used where Docker Hub is unreachable."""
    return debootstrap_image(
        PYTHON_BASE_IMAGE,
        PYTHON_BASE_PACKAGES,
        changes=('CMD ["python3"]',),
    )


def build_app_image(app_version: str | None = None) -> str:
    """Build app/Dockerfile on the Debian-built base; returns the image tag."""
    base = python_base_image()
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ}
    if app_version is not None:
        env["APP_VERSION"] = app_version
    with checkout_build_lock(repo):
        out = subprocess.run(
            [str(repo / "scripts" / "build-image.sh"), base],
            cwd=repo, env=env, check=True, capture_output=True, text=True,
        )  # fmt: skip
    return out.stdout.strip().splitlines()[-1]
