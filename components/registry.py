"""Registry and image: a private ECR repository and the API image built from ``app/``."""

from __future__ import annotations

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
from docker.utils.build import exclude_paths

from components._common import child_opts, merge_tags

PLATFORMS = ("linux/amd64", "linux/arm64")
# ECR tags: up to 128 of [A-Za-z0-9_.-], not starting with . or -.
# Source: botocore ecr PutImageRequest.imageTag / ImageTag pattern.
TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
# An existing image in ECR, pinned by digest: `<account>.dkr.ecr.<region>.amazonaws.com
# /<repository>[:<tag>]@sha256:<64 hex>`. Sources: botocore ecr RegistryId `[0-9]{12}`,
# RepositoryName (2-256 of `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/...)*`), the tag pattern
# above; ECR user guide "Registry concepts" (registry URL) and "Pulling an image" (by
# `@sha256:` digest). A `.com.cn` endpoint is the China partition.
_ECR_NAME_PART = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
ECR_REPOSITORY_RE = _ECR_NAME_PART + r"(?:/" + _ECR_NAME_PART + r")*"
IMAGE_REF_RE = re.compile(
    r"^(?P<account>[0-9]{12})\.dkr\.ecr\.(?P<region>[a-z]{2}(?:-[a-z]+)+-[0-9])"
    r"\.amazonaws\.com(?P<cn>\.cn)?/(?P<repository>" + ECR_REPOSITORY_RE + r")"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?@(?P<digest>sha256:[0-9a-f]{64})$"
)
DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")


@dataclass(frozen=True)
class ImageRef:
    """An ECR image pinned by digest (:func:`parse_image_ref`)."""

    account: str
    region: str
    repository: str
    tag: str
    """The tag written before the digest, or ``""``: ECR pulls by the digest alone."""
    digest: str
    """``sha256:<64 hex>``."""
    partition: str = "aws"

    @property
    def repository_url(self) -> str:
        suffix = ".cn" if self.partition == "aws-cn" else ""
        return f"{self.account}.dkr.ecr.{self.region}.amazonaws.com{suffix}/{self.repository}"

    @property
    def repository_arn(self) -> str:
        """Source: Service Authorization Reference, "Actions, resources, and condition keys
        for Amazon ECR", resource type ``repository``:
        ``arn:${Partition}:ecr:${Region}:${Account}:repository/${RepositoryName}``."""
        return f"arn:{self.partition}:ecr:{self.region}:{self.account}:repository/{self.repository}"

    @property
    def version(self) -> str:
        """What a person calls this release: its tag, else the digest's first 12 hex."""
        return self.tag or self.digest[:19]

    def __str__(self) -> str:
        tag = f":{self.tag}" if self.tag else ""
        return f"{self.repository_url}{tag}@{self.digest}"


def parse_image_ref(ref: str) -> ImageRef:
    """``ref`` as an :class:`ImageRef`; ``ValueError`` saying what shape is expected."""
    match = IMAGE_REF_RE.match(ref) if isinstance(ref, str) else None
    if not match or len(match["repository"]) > 256:
        raise ValueError(
            "an ECR image pinned by digest: <account>.dkr.ecr.<region>.amazonaws.com/"
            "<repository>[:<tag>]@sha256:<64 hex>"
        )
    return ImageRef(account=match["account"], region=match["region"],
                    repository=match["repository"], tag=match["tag"] or "",
                    digest=match["digest"], partition="aws-cn" if match["cn"] else "aws")


def context_files(
    context: str | os.PathLike[str], dockerfile: str = "Dockerfile"
) -> list[str]:
    """Paths, relative to ``context``, of the files Docker sends as the build context.

    Everything under ``context`` except what its ``.dockerignore`` excludes, chosen by
    the Docker SDK's ``docker.utils.build.exclude_paths`` (moby's pattern rules: ``**``,
    ``!`` re-includes, parent folders match); the Dockerfile and ``.dockerignore``
    themselves are always sent, as Docker sends them.
    """
    root = Path(context)
    patterns: list[str] = []
    ignore_file = root / ".dockerignore"
    if ignore_file.exists():
        # Read as the Docker SDK reads it (docker.api.build): stripped, no blanks or comments.
        patterns = [
            line.strip() for line in ignore_file.read_text().splitlines()
            if line.strip() and not line.strip().startswith("#")
        ]
    sent = exclude_paths(str(root), patterns, dockerfile=dockerfile)
    return sorted(
        Path(rel).as_posix() for rel in sent
        if (root / rel).is_symlink() or (root / rel).is_file()
    )


def context_hash(
    context: str | os.PathLike[str],
    *,
    build_args: Mapping[str, str] | None = None,
    platform: str = "",
    dockerfile: str = "Dockerfile",
) -> str:
    """Short SHA-256 of exactly what a build depends on: the files Docker sends
    (:func:`context_files`, with their bytes and executable bit), the build arguments,
    the platform and the Dockerfile's path.

    The immutable image tag when none is configured: the same inputs give the same tag on
    every machine, and a changed base image, platform or build argument gives a new tag
    rather than a rebuild under the old one (which ECR's immutable tags would refuse).
    """
    root = Path(context)
    digest = hashlib.sha256()
    for rel in context_files(root, dockerfile):
        path = root / rel
        if path.is_symlink():
            kind, body = b"l", os.readlink(path).encode()
        else:
            kind, body = (b"x" if os.access(path, os.X_OK) else b"f"), path.read_bytes()
        digest.update(b"file\0" + rel.encode() + b"\0" + kind + body + b"\0")
    digest.update(b"args\0" + json.dumps(dict(build_args or {}), sort_keys=True).encode())
    digest.update(b"\0platform\0" + platform.encode() + b"\0dockerfile\0" + dockerfile.encode())
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


@dataclass(frozen=True)
class BuildSpec:
    """How the API image is built: what ``pulumi up`` (:class:`Registry`) and
    ``prodstack build`` both pass to Docker, and the version (tag) it gets."""

    context: str
    dockerfile: str
    platform: str
    build_args: dict[str, str]
    tag: str


def build_spec(
    context: str | os.PathLike[str],
    *,
    base_image: str = "python:3.11-slim-bookworm",
    platform: str = "linux/amd64",
    dockerfile: str = "Dockerfile",
    tag: str = "",
    offline: bool = False,
) -> BuildSpec:
    """The one build recipe: ``BASE_IMAGE`` and ``SBOM_DIGEST`` build arguments, and the
    tag (``tag``, else the :func:`context_hash` of everything the build depends on).
    ``offline`` installs the dependencies from ``app/wheelhouse`` only (``OFFLINE=1``,
    for a machine that reaches no package index); being a build argument, it is part of
    the tag."""
    context = os.fspath(context)
    requirements = os.path.join(context, "requirements.txt")
    build_args = {
        "BASE_IMAGE": base_image,
        # app/Dockerfile turns it into the image label. Another app's context may have
        # no hash-pinned requirements.txt to describe: then there is no such label.
        **({"SBOM_DIGEST": sbom_digest(requirements)} if os.path.isfile(requirements) else {}),
        **({"OFFLINE": "1"} if offline else {}),
    }
    return BuildSpec(
        context=context, dockerfile=dockerfile, platform=platform, build_args=build_args,
        tag=tag or context_hash(context, build_args=build_args, platform=platform,
                                dockerfile=dockerfile),
    )


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
    """Docker build context (absolute path): the bundled ``app/``, or a user's own app
    (``app_context``). Required. Example: ``"/src/prodstack/app"``."""

    tag: str = ""
    """Immutable image tag: 1-128 of letters, digits, ``_ . -``. Empty means
    :func:`context_hash` of what the build depends on (context after ``.dockerignore``,
    build arguments, platform). Default: ``""``. Example: ``"v1.4.2"``."""

    dockerfile: str = "Dockerfile"
    """Dockerfile path relative to ``context``. Default: ``"Dockerfile"``.
    Example: ``"Dockerfile.api"``."""

    platform: str = "linux/amd64"
    """Target platform, ``linux/amd64`` or ``linux/arm64``; must match the task's CPU
    architecture. Default: ``"linux/amd64"``. Example: ``"linux/arm64"`` (Graviton)."""

    base_image: str = "python:3.11-slim-bookworm"
    """``BASE_IMAGE`` build argument (an official Python slim image by default).
    Default: ``"python:3.11-slim-bookworm"``. Example: ``"python:3.12-slim-bookworm"``."""

    image: str = ""
    """An existing image to deploy instead of building ``context``: an ECR reference
    pinned by digest (:func:`parse_image_ref`). Default: ``""`` (build). Example:
    ``"123456789012.dkr.ecr.eu-west-1.amazonaws.com/api:src-52e5fc285eb405c9@sha256:…"``."""

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
        if self.tag and not TAG_RE.match(self.tag):
            problems.append(f"tag={self.tag!r}: 1-128 of [A-Za-z0-9_.-]")
        if self.image:
            try:
                parse_image_ref(self.image)
            except ValueError as error:
                problems.append(f"image={self.image!r}: {error}")
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
        ``app/requirements.txt`` (:func:`sbom_digest`, docs/supply-chain.md). With
        ``image`` set, no ``{name}-image``: the tasks run that existing image.

    Example:
        ``Registry("app-registry", RegistryArgs(context="/src/prodstack/app"))``

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
    tag: str
    """The image's tag: ``tag``, or the :func:`context_hash` of the build."""

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
        self.repository_url = repo.repository_url
        self.pinned: ImageRef | None = None
        if args.image:
            # Deploy what exists; build nothing. The tasks pull exactly this digest.
            self.pinned = parse_image_ref(args.image)
            self.tag = self.pinned.version
            self.image_ref = pulumi.Output.from_input(str(self.pinned))
        else:
            self._build(name, args, repo)
        self.register_outputs(
            {"repository_url": self.repository_url, "image_ref": self.image_ref,
             "tag": self.tag}
        )

    def _build(self, name: str, args: RegistryArgs, repo: aws.ecr.Repository) -> None:
        auth = aws.ecr.get_authorization_token_output(
            registry_id=repo.registry_id, opts=pulumi.InvokeOptions(parent=self)
        )
        spec = build_spec(args.context, base_image=args.base_image, platform=args.platform,
                          dockerfile=args.dockerfile, tag=args.tag)  # fmt: skip
        self.tag = spec.tag
        image = docker.Image(
            f"{name}-image",
            image_name=pulumi.Output.concat(repo.repository_url, ":", self.tag),
            build=docker.DockerBuildArgs(
                context=spec.context,
                dockerfile=os.path.join(spec.context, spec.dockerfile),
                platform=spec.platform,
                args=spec.build_args,
            ),
            registry=docker.RegistryArgs(
                server=repo.repository_url,
                username=auth.user_name,
                password=pulumi.Output.secret(auth.password),
            ),
            opts=child_opts(self),
        )
        # repo_digest is "<repository_url>@sha256:...": deploy exactly what was pushed.
        self.image_ref = image.repo_digest
