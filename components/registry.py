"""Registry and image: a private ECR repository and the API image built from ``app/``."""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pulumi
import pulumi_aws as aws
import pulumi_docker as docker

from components._common import child_opts, merge_tags

PLATFORMS = ("linux/amd64", "linux/arm64")
# ECR tags: up to 128 of [A-Za-z0-9_.-], not starting with . or -.
# Source: botocore ecr PutImageRequest.imageTag / ImageTag pattern.
TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


def context_hash(context: str | os.PathLike[str]) -> str:
    """Short SHA-256 over every file's path and bytes under ``context`` (ignores caches).

    Used as the immutable image tag when none is configured: the same source gives the
    same tag, so an unchanged ``app/`` pushes nothing new.
    """
    root = Path(context)
    ignored = _dockerignore(root)
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if "__pycache__" in rel or rel.endswith(".pyc") or ignored(rel):
            continue
        # Downloaded wheels are a build cache: requirements.txt pins them by hash, so the
        # tag follows the source, not what happens to be in a checkout's wheelhouse.
        if rel.startswith("wheelhouse/"):
            continue
        digest.update(rel.encode() + b"\0" + path.read_bytes() + b"\0")
    return "src-" + digest.hexdigest()[:16]


# The CycloneDX SBOM of the image's Python packages, made from the hash-pinned requirements
# alone. --output-reproducible drops the timestamp and serial number, so the same lock
# gives the same bytes, and so the same digest, on every machine and in every plan.
# scripts/build-image.sh runs the same command; tests/image checks that the two agree.
SBOM_COMMAND = ("-m", "cyclonedx_py", "requirements", "--output-reproducible",
                "--of", "JSON", "--sv", "1.6")


def sbom(requirements: str | os.PathLike[str]) -> bytes:
    """The SBOM (CycloneDX 1.6 JSON) of the packages pinned in ``requirements``."""
    # SOURCE_DATE_EPOCH would put a timestamp back in.
    env = {k: v for k, v in os.environ.items() if k != "SOURCE_DATE_EPOCH"}
    try:
        out = subprocess.run(
            [sys.executable, *SBOM_COMMAND, os.fspath(requirements)],
            env=env, capture_output=True, check=True, timeout=120,
        )
    except FileNotFoundError as exc:
        raise RuntimeError(f"SBOM of {requirements}: {exc}") from None
    except subprocess.CalledProcessError as exc:
        last = (exc.stderr.decode(errors="replace").strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(
            f"SBOM of {requirements}: cyclonedx-py failed ({last}); it comes with "
            "`uv sync` (the cloud group's cyclonedx-bom)"
        ) from None
    return out.stdout


def sbom_digest(requirements: str | os.PathLike[str]) -> str:
    """``sha256:<hex>`` of :func:`sbom`: the ``dev.prodstack.sbom.digest`` image label."""
    return "sha256:" + hashlib.sha256(sbom(requirements)).hexdigest()


def _dockerignore(root: Path):
    """Whether a context path is excluded by ``root/.dockerignore`` (what Docker never sees
    cannot change the image). Patterns match a path or any of its parent folders;
    ``**/`` matches any depth, ``!`` re-includes."""
    rules = []
    ignore_file = root / ".dockerignore"
    if ignore_file.exists():
        for line in ignore_file.read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                keep = line.startswith("!")
                rules.append((keep, line.lstrip("!").strip("/")))

    def matches(rel: str, pattern: str) -> bool:
        parts = rel.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        options = {pattern, pattern.removeprefix("**/")}
        return any(fnmatch.fnmatchcase(p, o) for p in prefixes for o in options)

    def ignored(rel: str) -> bool:
        result = False
        for keep, pattern in rules:
            if matches(rel, pattern):
                result = not keep
        return result

    return ignored


def lifecycle_policy(keep_images: int) -> str:
    """ECR lifecycle policy JSON expiring all but the newest ``keep_images`` images.

    Shape per AWS ECR user guide "Lifecycle policy properties": a single ``tagStatus: any``
    rule (which must hold the highest priority) counting by ``imageCountMoreThan``.
    """
    return json.dumps(
        {
            "rules": [
                {
                    "rulePriority": 1,
                    "description": f"Keep the last {keep_images} images",
                    "selection": {
                        "tagStatus": "any",
                        "countType": "imageCountMoreThan",
                        "countNumber": keep_images,
                    },
                    "action": {"type": "expire"},
                }
            ]
        }
    )


@dataclass(frozen=True)
class RegistryArgs:
    """Inputs of :class:`Registry`."""

    context: str
    """Docker build context, the ``app/`` directory (absolute path). Required.
    Example: ``"/src/prodstack/app"``."""

    tag: str
    """Immutable image tag: 1-128 of letters, digits, ``_ . -``. Required.
    Example: ``"src-1a2b3c4d5e6f7a8b"`` (see :func:`context_hash`)."""

    dockerfile: str = ""
    """Dockerfile path; empty means ``<context>/Dockerfile``. Default: ``""``.
    Example: ``"/src/prodstack/app/Dockerfile"``."""

    platform: str = "linux/amd64"
    """Target platform, ``linux/amd64`` or ``linux/arm64``; must match the task's CPU
    architecture. Default: ``"linux/amd64"``. Example: ``"linux/arm64"`` (Graviton)."""

    base_image: str = "python:3.11-slim-bookworm"
    """``BASE_IMAGE`` build argument (an official Python slim image by default).
    Default: ``"python:3.11-slim-bookworm"``. Example: ``"python:3.12-slim-bookworm"``."""

    keep_images: int = 30
    """Images the lifecycle rule keeps, 1 or more. Default: ``30``. Example: ``100``."""

    force_delete: bool = False
    """Delete the repository even when it holds images. Default: ``False``.
    Example: ``True`` (dev, easy to destroy)."""

    tags: Mapping[str, str] = field(default_factory=dict)
    """Tags applied to the repository. Default: ``{}``.
    Example: ``{"prodstack:environment": "prod"}``."""

    def __post_init__(self) -> None:
        problems = []
        if self.platform not in PLATFORMS:
            problems.append(f"platform={self.platform!r}: allowed {', '.join(PLATFORMS)}")
        if not TAG_RE.match(self.tag):
            problems.append(f"tag={self.tag!r}: 1-128 of [A-Za-z0-9_.-]")
        if self.keep_images < 1:
            problems.append(f"keep_images={self.keep_images}: at least 1")
        if problems:
            raise ValueError("RegistryArgs: " + "; ".join(problems))


class Registry(pulumi.ComponentResource):
    """A private ECR repository (scan on push, immutable tags, lifecycle) and the API image.

    Creates:
        ``{name}-repo``, ``{name}-lifecycle`` and ``{name}-image`` (pulumi-docker build of
        ``app/`` with ``BASE_IMAGE``, pushed with short-lived ECR credentials). The image
        carries the ``dev.prodstack.sbom.digest`` label: the digest of the SBOM of
        ``app/requirements.txt`` (:func:`sbom_digest`, docs/supply-chain.md).

    Example:
        ``Registry("app-registry", RegistryArgs(context="app", tag=context_hash("app")))``

    Cost:
        $0.10/GB-month of stored images; 30 images of ~150 MB -> **~$0.45/month**. Basic
        scanning is free. Knob: ``keep_images``.

    Secure defaults:
        Immutable tags, scan on push, AES-256 encryption, the service deploys the image
        by digest (``repo@sha256:...``), not by tag.

    Opt-outs:
        ``force_delete=True`` (dev).
    """

    repository_url: pulumi.Output[str]
    """``<account>.dkr.ecr.<region>.amazonaws.com/<repo>``."""
    image_ref: pulumi.Output[str]
    """The pushed image by digest, ``<repository_url>@sha256:<digest>``."""

    def __init__(
        self, name: str, args: RegistryArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("prodstack:registry:Registry", name, None, opts)
        repo = aws.ecr.Repository(
            f"{name}-repo",
            image_tag_mutability="IMMUTABLE",
            image_scanning_configuration={"scan_on_push": True},
            encryption_configurations=[{"encryption_type": "AES256"}],
            force_delete=args.force_delete,
            tags=merge_tags(args.tags, "repo"),
            opts=child_opts(self),
        )
        aws.ecr.LifecyclePolicy(
            f"{name}-lifecycle",
            repository=repo.name,
            policy=lifecycle_policy(args.keep_images),
            opts=child_opts(self),
        )
        auth = aws.ecr.get_authorization_token_output(
            registry_id=repo.registry_id, opts=pulumi.InvokeOptions(parent=self)
        )
        image = docker.Image(
            f"{name}-image",
            image_name=pulumi.Output.concat(repo.repository_url, ":", args.tag),
            build=docker.DockerBuildArgs(
                context=args.context,
                dockerfile=args.dockerfile or os.path.join(args.context, "Dockerfile"),
                platform=args.platform,
                args={
                    "BASE_IMAGE": args.base_image,
                    # app/Dockerfile turns it into the image label.
                    "SBOM_DIGEST": sbom_digest(os.path.join(args.context, "requirements.txt")),
                },
            ),
            registry=docker.RegistryArgs(
                server=repo.repository_url,
                username=auth.user_name,
                password=pulumi.Output.secret(auth.password),
            ),
            opts=child_opts(self),
        )
        self.repository_url = repo.repository_url
        # repo_digest is "<repository_url>@sha256:...": deploy exactly what was pushed.
        self.image_ref = image.repo_digest
        self.register_outputs(
            {"repository_url": self.repository_url, "image_ref": self.image_ref}
        )
