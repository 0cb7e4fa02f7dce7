"""The API: image delivery without a registry, env file, and the health-gated rolling deploy.

The rolling replacement itself runs on the host, in `prodstack-release`
(prodstack/host/release.py): it starts each new replica on its spare port, waits for
/health/ready, switches the nginx upstream, drains and stops the old one, and aborts with
the old version serving if a check fails. It lives on the host so an operator can roll
back or re-run it without pyinfra, and because a health-gated loop isn't a declarative operation.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import tempfile
import weakref
from functools import cache
from pathlib import Path

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import docker, files, server, systemd

from tasks.audit import operator  # who deploys: the release history, the lock, the audit log
from tasks.config import REPO_DIR, Settings, SettingsError
from tasks.facts import DockerImageId, ReleaseCurrent, ReleaseStatus
from tasks.pki import CA_ON_HOST, upload_ca
from tasks.rotation import confirm
from tasks.templates import template, unit_file

IMAGE_CACHE = REPO_DIR / ".prodstack" / "images"
# Per pyinfra run (its State), the deploy operations of the web hosts prepared so far:
# tasks/ modules load once per process, deploy.py runs once per host.
_ROLLOUTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@cache
def build_image() -> str:
    """Build app/ locally (scripts/build-image.sh) when no `image` is given."""
    result = subprocess.run(
        [str(REPO_DIR / "scripts" / "build-image.sh")], capture_output=True, text=True
    )
    if result.returncode != 0:
        raise SettingsError(
            "building app/ locally failed (`image` is not set); set `image` or "
            f"PRODSTACK_IMAGE to an existing tag.\n{result.stderr[-2000:]}"
        )
    return result.stdout.strip().splitlines()[-1]


@cache
def build_context(context: Path) -> str:
    """Build a user's own app (`app_context`) with plain `docker build`, tagged by its image
    ID as build-image.sh tags app/: prodstack-app:<12 hex>."""
    with tempfile.NamedTemporaryFile(prefix="prodstack-iid-") as iid:
        result = subprocess.run(
            ["docker", "build", "--quiet", "--iidfile", iid.name,
             "--label", f"org.opencontainers.image.revision={git_revision(context) or 'unknown'}",
             str(context)],
            capture_output=True, text=True,
        )  # fmt: skip
        if result.returncode != 0:
            raise SettingsError(
                f"`docker build` of `app_context` {str(context)!r} failed; fix the build or "
                f"set `image`.\n{result.stderr[-2000:]}"
            )
        image_id = Path(iid.name).read_text().strip()
    tag = f"prodstack-app:{image_id.removeprefix('sha256:')[:12]}"
    subprocess.run(["docker", "tag", image_id, tag], check=True, capture_output=True)
    return tag


def resolve_image(cfg: Settings) -> str:
    if cfg.image:
        return cfg.image
    return build_context(cfg.app_context) if cfg.app_context else build_image()


@cache
def git_revision(directory: Path = REPO_DIR) -> str | None:
    """The operator's checkout, recorded with each release: HEAD, "-dirty" if modified."""
    head = subprocess.run(["git", "-C", str(directory), "rev-parse", "HEAD"],
                          capture_output=True, text=True)  # fmt: skip
    if head.returncode != 0:
        return None
    dirty = subprocess.run(["git", "-C", str(directory), "status", "--porcelain", "-uno"],
                           capture_output=True, text=True).stdout.strip()  # fmt: skip
    return head.stdout.strip() + ("-dirty" if dirty else "")


def replacing(current: dict | None) -> str:
    """What a deploy replaces, for its operation name: a deploy after a rollback says so."""
    if not current or not current.get("current"):
        return "first release on this host"
    version = current.get("version") or current["current"]
    if current.get("kind") == "rollback":
        return f"replacing {version}, serving after a rollback"
    return f"replacing {version}"


@cache
def image_tarball(image: str) -> Path:
    """`docker save | gzip` once per image, reused for every host and later runs."""
    IMAGE_CACHE.mkdir(parents=True, exist_ok=True)
    path = IMAGE_CACHE / (re.sub(r"[^A-Za-z0-9_.-]", "_", image) + ".tar.gz")
    if not path.exists():
        # A temp file of its own: pyinfra prepares several web hosts at once (gevent), and
        # each may get here before the first has finished; the last rename wins, same bytes.
        fd, name = tempfile.mkstemp(dir=IMAGE_CACHE, prefix=path.name, suffix=".tmp")
        tmp = Path(name)
        with os.fdopen(fd, "wb") as out:
            save = subprocess.Popen(["docker", "save", image], stdout=subprocess.PIPE)
            gzip = subprocess.run(["gzip", "-1"], stdin=save.stdout, stdout=out)
            if save.wait() != 0 or gzip.returncode != 0:
                tmp.unlink(missing_ok=True)
                raise SettingsError(
                    f"`docker save` of `image` {image!r} failed locally; build it first "
                    "(scripts/build-image.sh) or set image_pull=True"
                )
        os.replace(tmp, path)
    return path


@deploy("API service")
def service(cfg: Settings) -> None:
    image = resolve_image(cfg)
    # /etc/prodstack itself: deploy.py, before this task.
    files.directory(name="State directory", path="/var/lib/prodstack", mode="750")
    env = template(
        name="Container env file with the secrets (0600)",
        src="app.j2.env",
        secret=True,
        dest="/etc/prodstack/app.env",
        mode="600",
        cfg=cfg,
    )
    # Split layout: the app verifies PostgreSQL's and Redis's certificates against this.
    ca = upload_ca(cfg, label="the API verifies the db host with it") if cfg.db_tls else None
    release_conf = template(
        name="Release settings: replicas, ports, limits, health gate",
        src="release.j2.json",
        dest="/etc/prodstack/release.json",
        mode="644",
        cfg=cfg,
        ca_file=CA_ON_HOST,
    )
    unit_file(
        name="Unit prodstack-release-resume.service (a bake's end survives a reboot)",
        src="prodstack-release-resume.j2.service",
        dest="/etc/systemd/system/prodstack-release-resume.service",
        label="bake resume",
    )
    # Enabled for the next boot; running it now would only repeat what the deploy does.
    systemd.service(name="Bake resume enabled at boot", service="prodstack-release-resume",
                    running=None, enabled=True)  # fmt: skip

    if cfg.image_pull:
        docker.image(name=f"Pull {image}", image=image, present=True)
    elif host.get_fact(DockerImageId, image=image) is None:
        # No registry: the image travels over the SSH connection and is loaded locally.
        remote = f"/var/lib/prodstack/{image_tarball(image).name}"
        files.put(
            name=f"Ship {image} over SSH (docker save)",
            src=str(image_tarball(image)),
            dest=remote,
            mode="600",
        )
        server.shell(
            name=f"docker load {image}",
            commands=[f"docker load -i {remote}", f"rm -f {remote}"],
        )

    status = host.get_fact(ReleaseStatus, image=image)
    current = host.get_fact(ReleaseCurrent)
    rollout = f"/usr/local/sbin/prodstack-release deploy {shlex.quote(image)}"
    # Recorded in the host's release history. In the environment, not the command: the
    # command is what plans compare, and these differ per commit and per operator.
    recorded = {
        "PRODSTACK_DEPLOY_BY": operator(),
        "PRODSTACK_DEPLOY_REVISION": git_revision(cfg.app_context or REPO_DIR) or "",
    }
    # _serial: with several web hosts, one host at a time, so the others keep their full
    # capacity while one replaces its replicas; and none starts after one has failed.
    rollouts = _ROLLOUTS.setdefault(host.state, [])
    earlier = tuple(rollouts)

    def no_host_failed() -> bool:
        return not any(op.is_complete() and op.did_error() for op in earlier)

    if status != "in-sync":
        op = server.shell(
            name=f"Deploy {image}, {replacing(current)} ({cfg.deploy_strategy}; {status})",
            commands=[rollout], _env=recorded,
            _serial=True, _if=no_host_failed,
        )  # fmt: skip
    else:
        op = server.shell(
            name=f"Restart {image} for new settings ({cfg.deploy_strategy})",
            commands=[rollout],
            _env=recorded,
            _serial=True,
            _if=lambda: (
                no_host_failed()
                and (
                    env.did_change()
                    or release_conf.did_change()
                    or (ca is not None and ca.did_change())
                )
            ),
        )
    rollouts.append(op)
    # Only reached when the rollout succeeded (pyinfra stops a host at its first error):
    # the replicas run this env file's passwords, and the db host may drop the old ones.
    confirm(cfg, after=no_host_failed)
