"""`prodstack build` and `prodstack rollback`: a release is one immutable image.

- ``build`` builds the API image with the one recipe ``pulumi up`` uses
  (``components.registry.build_spec``: the same build arguments, platform and tag) and
  prints its version and image ID; with ``--repository`` it pushes and prints the digest
  to pin.
- ``rollback`` points a cloud stack at an image that already exists in ECR: it resolves
  VERSION to a digest (``DescribeImages`` when AWS credentials are there, ``--digest``
  when not) and writes the stack's ``image`` config, through ``pulumi config set`` when
  the Pulumi CLI is installed and otherwise by editing ``Pulumi.<stack>.yaml`` in place
  (:func:`set_stack_config`). With ``--profile vps`` it hands over to
  ``prodstack.vps_release.rollback``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from prodstack import REPO
from prodstack.errors import UsageError

PROJECT = "prodstack"

BUILD_EXAMPLES = """examples:
  prodstack build                                   # build app/, print version and image ID
  prodstack build --tag v1.4.2 --base-image python:3.11-slim-bookworm
  prodstack build --offline --base-image prodstack/python-base:bookworm   # no package index
  prodstack build --repository 111122223333.dkr.ecr.eu-west-1.amazonaws.com/api --format json
"""
ROLLBACK_EXAMPLES = """examples:
  prodstack rollback --stack prod --to src-52e5fc285eb405c9    # digest from ECR (credentials)
  prodstack rollback --stack prod --to src-52e5fc285eb405c9 --digest sha256:... \\
      --repository 111122223333.dkr.ecr.eu-west-1.amazonaws.com/prodstack-registry-repo-1a2b3c4
  prodstack rollback --profile vps -i pyinfra/inventory.py            # undo the last deploy
  prodstack rollback --profile vps -i pyinfra/inventory.py --to 1a2b3c4d5e6f
  prodstack rollback --profile vps -i inventory.py --to v1.4.2 --host web-1
"""
# A config key as Pulumi writes it in a stack file: `namespace:name`.
_KEY_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*:[A-Za-z][A-Za-z0-9_]*$")


# ---- the stack-file editor -------------------------------------------------------------

def set_stack_config(path: Path, key: str, value: str) -> bool:
    """Set ``key`` (``namespace:name``) to the string ``value`` in a Pulumi stack file,
    changing only that key's line (or adding one line at the end of ``config:``), so the
    file's comments, order and layout stay as they were. Returns whether the file changed.

    A line edit rather than a YAML round trip: PyYAML drops comments, and the libraries
    that keep them are not dependencies here. The edit is checked instead: the new text is
    parsed, and it must hold exactly the old config with ``key`` set to ``value``, or the
    file is left alone and ``UsageError`` says why. A key whose value spans lines (a
    ``secure:`` secret, a list) is refused, as are values with control characters.
    """
    if not _KEY_RE.match(key):
        raise UsageError(f"{key!r}: not a config key (namespace:name)")
    if not isinstance(value, str) or any(ord(c) < 0x20 or c == "\x7f" for c in value):
        raise UsageError(f"{key}: the value must be one line of printable text")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{path}: no such stack file") from None
    before = _stack_values(text, path)
    lines = text.splitlines(keepends=True)
    config_at = next((i for i, line in enumerate(lines) if re.match(r"^config:\s*(#.*)?$", line)),
                     None)  # fmt: skip
    rendered = _scalar(value)
    if config_at is None:
        ending = "" if not lines or lines[-1].endswith("\n") else "\n"
        new_lines = [*lines, ending + "config:\n", f"  {key}: {rendered}\n"]
    else:
        block = _config_block(lines, config_at)
        indent = next((re.match(r"^( +)", lines[i]).group(1) for i in block
                       if re.match(r"^ +[^\s#]", lines[i])), "  ")  # fmt: skip
        mine = [i for i in block if re.match(rf"^{indent}{re.escape(key)}\s*:", lines[i])]
        if mine:
            at = mine[0]
            match = re.match(rf"^({indent}{re.escape(key)}\s*:\s*)(.*?)(\s+#.*)?(\r?\n)?$",
                             lines[at])  # fmt: skip
            if not match or not match.group(2):
                raise UsageError(f"{path.name}: {key} is not a one-line value; set it by hand")
            new_lines = list(lines)
            new_lines[at] = (match.group(1) + rendered + (match.group(3) or "")
                             + (match.group(4) or "\n"))  # fmt: skip
        else:
            # After the last entry of the block (comments and blank lines after it stay).
            last = max((i for i in block if re.match(r"^ +[^\s#]", lines[i])), default=config_at)
            new_lines = list(lines)
            if not new_lines[last].endswith("\n"):
                new_lines[last] += "\n"
            new_lines.insert(last + 1, f"{indent}{key}: {rendered}\n")
    new_text = "".join(new_lines)
    if new_text == text:
        return False
    after = _stack_values(new_text, path)
    if after != {**before, key: value}:
        raise UsageError(f"{path.name}: could not set {key} in place without changing "
                         "other settings; set it by hand")
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(new_text, encoding="utf-8")
    os.chmod(partial, path.stat().st_mode & 0o7777)
    partial.replace(path)
    return True


def _stack_values(text: str, path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError:
        raise UsageError(f"{path.name}: invalid YAML; fix it before changing it") from None
    config = data.get("config") if isinstance(data, dict) else None
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise UsageError(f"{path.name}: `config` must be a mapping")
    # Values as Pulumi reads them: a number or a boolean is its text.
    return {k: v if isinstance(v, (dict, list)) else _text(v) for k, v in config.items()}


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def _config_block(lines: list[str], start: int) -> list[int]:
    """Line numbers inside the top-level ``config:`` mapping that starts at ``start``."""
    block = []
    for i in range(start + 1, len(lines)):
        if re.match(r"^\S", lines[i]) and not lines[i].startswith("#"):
            break
        block.append(i)
    return block


def _scalar(value: str) -> str:
    """``value`` as a YAML scalar that reads back as the same string: plain if it does,
    double-quoted (JSON escaping, valid YAML) otherwise."""
    try:
        if value and yaml.safe_load(f"k: {value}") == {"k": value} and "#" not in value:
            return value
    except yaml.YAMLError:
        pass
    return json.dumps(value)


# ---- resolving a version ---------------------------------------------------------------

def has_aws_credentials() -> bool:
    try:
        import boto3
        from botocore.exceptions import BotoCoreError
    except ImportError:
        return False
    try:
        return boto3.Session().get_credentials() is not None
    except BotoCoreError as error:  # e.g. AWS_PROFILE names no profile
        raise UsageError(f"AWS credentials: {error}") from None


def resolve_digest(repository: str, version: str, *, region: str,
                   registry_id: str | None = None) -> str:  # fmt: skip
    """The digest of the image tagged ``version`` in ECR, by ``DescribeImages``."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    ecr = boto3.client("ecr", region_name=region)
    request: dict[str, Any] = {"repositoryName": repository,
                               "imageIds": [{"imageTag": version}]}
    if registry_id:
        request["registryId"] = registry_id
    try:
        images = ecr.describe_images(**request)["imageDetails"]
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code", "")
        if code == "ImageNotFoundException":
            raise UsageError(f"--to {version}: no image with that tag in ECR repository "
                             f"{repository} (ECR keeps the newest keep_images images)") from None
        if code == "RepositoryNotFoundException":
            raise UsageError(f"--repository {repository}: no such ECR repository") from None
        raise UsageError(f"ECR DescribeImages on {repository}: {code or error}") from None
    except BotoCoreError as error:
        raise UsageError(f"ECR DescribeImages on {repository}: {error}") from None
    if not images:
        raise UsageError(f"--to {version}: no image with that tag in {repository}")
    return images[0]["imageDigest"]


# ---- rollback --------------------------------------------------------------------------

def _stack_region(root: Path, stack: str) -> str:
    values = _stack_values((root / f"Pulumi.{stack}.yaml").read_text(encoding="utf-8"),
                           root / f"Pulumi.{stack}.yaml")  # fmt: skip
    return str(values.get("aws:region") or os.environ.get("AWS_REGION") or "")


def _current_image(root: Path, stack: str) -> str:
    """The image the stack deploys now: its ``image`` setting, else Pulumi's stack output."""
    values = _stack_values((root / f"Pulumi.{stack}.yaml").read_text(encoding="utf-8"),
                           root / f"Pulumi.{stack}.yaml")  # fmt: skip
    if values.get(f"{PROJECT}:image"):
        return str(values[f"{PROJECT}:image"])
    if shutil.which("pulumi"):
        proc = subprocess.run(["pulumi", "stack", "output", "image", "--stack", stack],
                              cwd=root, capture_output=True, text=True, timeout=120)  # fmt: skip
        if proc.returncode == 0:
            return proc.stdout.strip()
    return ""


def _repository_url(args: argparse.Namespace, root: Path) -> str:
    """``<account>.dkr.ecr.<region>.amazonaws.com/<repository>`` of the stack's images."""
    if args.repository:
        url = args.repository
    else:
        current = _current_image(root, args.stack)
        url = re.split(r"[@]", current, maxsplit=1)[0]
        last = url.rsplit("/", 1)
        if len(last) == 2 and ":" in last[1]:
            url = last[0] + "/" + last[1].split(":", 1)[0]
    if not url:
        raise UsageError(
            f"--repository: the stack's ECR repository is not known here (no `image` in "
            f"Pulumi.{args.stack}.yaml and no Pulumi CLI for `pulumi stack output image`); "
            "pass --repository <account>.dkr.ecr.<region>.amazonaws.com/<name>")
    from components.registry import ECR_REPOSITORY_RE

    if not re.match(r"^[0-9]{12}\.dkr\.ecr\.[a-z0-9-]+\.amazonaws\.com(\.cn)?/"
                    + ECR_REPOSITORY_RE + "$", url):  # fmt: skip
        raise UsageError(f"--repository {url!r}: expected "
                         "<account>.dkr.ecr.<region>.amazonaws.com/<repository>")
    return url


def write_stack_config(root: Path, stack: str, key: str, value: str) -> str:
    """Set one key of a stack's config, the way the operator would: `pulumi config set`
    when the Pulumi CLI is installed, else a checked in-place edit of
    ``Pulumi.<stack>.yaml`` (:func:`set_stack_config`). Returns how it was set."""
    stack_file = root / f"Pulumi.{stack}.yaml"
    if shutil.which("pulumi"):
        print(f"prodstack: pulumi config set --stack {stack} {key} {value}", file=sys.stderr)
        proc = subprocess.run(["pulumi", "config", "set", "--stack", stack, key, value],
                              cwd=root, capture_output=True, text=True, timeout=120)  # fmt: skip
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise UsageError(f"pulumi config set failed: {last}")
        return "pulumi config set"
    changed = set_stack_config(stack_file, key, value)
    return f"edited {stack_file.name}" if changed else f"{stack_file.name} already had it"


def cmd_rollback(args: argparse.Namespace) -> int:
    if args.profile == "vps":
        return _rollback_vps(args)
    for flag, value in (("--inventory", args.inventory), ("--host", args.host)):
        if value:
            raise UsageError(f"{flag}: only with --profile vps")
    if not args.stack:
        raise UsageError("--stack: required for the cloud profile (e.g. --stack prod)")
    if not args.to:
        raise UsageError("--to VERSION: required for the cloud profile (an image tag in ECR, "
                         "e.g. src-52e5fc285eb405c9)")
    from components.registry import DIGEST_RE, TAG_RE, parse_image_ref

    if not TAG_RE.match(args.to):
        raise UsageError(f"--to {args.to!r}: an image tag, 1-128 of [A-Za-z0-9_.-]")
    if args.digest and not DIGEST_RE.match(args.digest):
        raise UsageError(f"--digest {args.digest!r}: expected sha256:<64 hex>")
    root = args.root.resolve()
    stack_file = root / f"Pulumi.{args.stack}.yaml"
    if not stack_file.is_file():
        raise UsageError(f"--stack {args.stack}: no {stack_file.name} in {root}")
    url = _repository_url(args, root)
    host, repository = url.split("/", 1)
    account, region = host.split(".")[0], host.split(".")[3]
    if has_aws_credentials():
        print(f"prodstack: resolving {args.to} in {repository} (ECR DescribeImages)",
              file=sys.stderr)
        digest = resolve_digest(repository, args.to, region=region, registry_id=account)
        if args.digest and args.digest != digest:
            raise UsageError(f"--digest {args.digest}: ECR says {args.to} is {digest}")
    elif args.digest:
        digest = args.digest
    else:
        raise UsageError(f"--digest: no AWS credentials to look {args.to} up in ECR; pass "
                         "--digest sha256:... (ECR console, or `aws ecr describe-images`)")
    ref = str(parse_image_ref(f"{url}:{args.to}@{digest}"))
    key = f"{PROJECT}:image"
    how = write_stack_config(root, args.stack, key, ref)
    result = {"stack": args.stack, "version": args.to, "digest": digest, "image": ref,
              "set_by": how, "next": f"pulumi up --stack {args.stack}"}  # fmt: skip
    if args.format == "json":
        sys.stdout.write(json.dumps(result, indent=1, sort_keys=True) + "\n")
    else:
        sys.stdout.write(
            f"Rolled `{args.stack}` back to {args.to} ({how}):\n\n"
            f"    {key}: {ref}\n\n"
            f"Review it with `prodstack diff --base HEAD --head <your branch> --stack "
            f"{args.stack}` (it reads \"Roll back to {args.to}\"), then run "
            f"`pulumi up --stack {args.stack}`: a new deployment of that image. To go "
            f"forward again, remove `{key}` (`pulumi config rm {key}`).\n")
    return 0


def _rollback_vps(args: argparse.Namespace) -> int:
    if args.stack or args.digest or args.repository:
        raise UsageError("--stack, --digest and --repository: cloud only; the VPS profile "
                         "takes -i INVENTORY [--to VERSION] [--host H]")
    if not args.inventory:
        raise UsageError("-i/--inventory: rollback --profile vps needs -i INVENTORY")
    if not args.inventory.is_file():
        raise UsageError(f"-i {args.inventory}: no such inventory file")
    try:
        from prodstack import vps_release
    except ImportError:
        raise UsageError("--profile vps: this prodstack has no VPS release history "
                         "(prodstack.vps_release) yet") from None
    return vps_release.rollback(inventory=args.inventory, to=args.to, host=args.host)


# ---- build -----------------------------------------------------------------------------

def cmd_build(args: argparse.Namespace) -> int:
    from components.registry import PLATFORMS, TAG_RE, build_spec

    if args.tag and not TAG_RE.match(args.tag):
        raise UsageError(f"--tag {args.tag!r}: 1-128 of [A-Za-z0-9_.-], not starting with . or -")
    if args.platform not in PLATFORMS:
        raise UsageError(f"--platform {args.platform}: one of {', '.join(PLATFORMS)}")
    context = args.context.resolve()
    if not (context / args.dockerfile).is_file():
        raise UsageError(f"--context {args.context}: no {args.dockerfile} there")
    if not shutil.which("docker"):
        raise UsageError("docker: not on PATH; `prodstack build` runs `docker build`")
    try:
        spec = build_spec(context, base_image=args.base_image, platform=args.platform,
                          dockerfile=args.dockerfile, tag=args.tag,
                          offline=args.offline)  # fmt: skip
    except RuntimeError as error:
        raise UsageError(str(error)) from None
    repository = args.repository or "prodstack-api"
    name = f"{repository}:{spec.tag}"
    print(f"prodstack: building {name} from {context}", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="prodstack-build-") as tmp:
        iid = Path(tmp) / "iid"
        command = ["docker", "build", "--quiet", "--platform", spec.platform,
                   "-f", str(context / spec.dockerfile), "--iidfile", str(iid), "-t", name]
        for key, value in spec.build_args.items():
            command += ["--build-arg", f"{key}={value}"]
        proc = subprocess.run([*command, str(context)], capture_output=True, text=True)
        if proc.returncode != 0:
            tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
            print(tail, file=sys.stderr)
            raise UsageError(f"docker build of {context} failed (its output is above)")
        image_id = iid.read_text().strip()
    result: dict[str, Any] = {"version": spec.tag, "image": name, "image_id": image_id,
                              "platform": spec.platform, "build_args": spec.build_args}
    if args.repository:
        print(f"prodstack: pushing {name}", file=sys.stderr)
        push = subprocess.run(["docker", "push", "--quiet", name], capture_output=True,
                              text=True)  # fmt: skip
        if push.returncode != 0:
            last = (push.stderr.strip().splitlines() or ["no output"])[-1]
            raise UsageError(f"docker push {name} failed: {last}")
        digests = subprocess.run(
            ["docker", "image", "inspect", "--format", "{{json .RepoDigests}}", image_id],
            capture_output=True, text=True, check=True).stdout  # fmt: skip
        repo_digest = next((d for d in json.loads(digests) if d.startswith(repository + "@")),
                           None)  # fmt: skip
        if repo_digest:
            result["digest"] = repo_digest.split("@", 1)[1]
            result["pin"] = f"{repository}:{spec.tag}@{result['digest']}"
    if args.format == "json":
        sys.stdout.write(json.dumps(result, indent=1, sort_keys=True) + "\n")
    else:
        lines = [f"version   {spec.tag}", f"image     {name}", f"image id  {image_id}"]
        if "pin" in result:
            lines += [f"digest    {result['digest']}",
                      f"deploy    pulumi config set image {result['pin']}"]
        sys.stdout.write("\n".join(lines) + "\n")
    return 0


# ---- registration ----------------------------------------------------------------------

def register(sub: Any, subcommand: Any) -> None:
    """Add ``build`` and ``rollback`` to the CLI (``subcommand`` is cli._subcommand)."""
    build = subcommand(sub, "build", "build the API image once: print its version and ID",
                       "Build the image with the recipe `pulumi up` uses (the same build "
                       "arguments, platform and content-hash tag), print its version and image "
                       "ID, and with --repository push it and print the digest to pin as "
                       "`image`.", BUILD_EXAMPLES)
    build.add_argument("--context", type=Path, default=REPO / "app",
                       help="build context (default: the bundled app/)")
    build.add_argument("--dockerfile", default="Dockerfile",
                       help="Dockerfile, relative to the context (default: Dockerfile)")
    build.add_argument("--tag", default="", help="version tag (default: the content hash)")
    build.add_argument("--platform", default="linux/amd64",
                       help="linux/amd64 (default) or linux/arm64, as image_platform")
    build.add_argument("--base-image", default="python:3.11-slim-bookworm",
                       help="BASE_IMAGE build argument, as base_image")
    build.add_argument("--offline", action="store_true",
                       help="install dependencies from the context's wheelhouse only "
                       "(OFFLINE=1; scripts/build-image.sh fills it); part of the version")
    build.add_argument("--repository", metavar="URL",
                       help="ECR repository URL to tag and push to (docker login first)")
    build.add_argument("--format", choices=("markdown", "json"), default="markdown")
    build.set_defaults(func=cmd_build)

    rollback = subcommand(sub, "rollback", "deploy an earlier image again",
                          "Cloud: set the stack's `image` to an earlier image in ECR, by "
                          "digest, then `pulumi up`. VPS: go back to an earlier release in "
                          "each host's release history.", ROLLBACK_EXAMPLES)
    rollback.add_argument("--profile", choices=("cloud", "vps"), default="cloud")
    rollback.add_argument("--stack", help="cloud: the Pulumi stack (Pulumi.<stack>.yaml)")
    rollback.add_argument("--to", metavar="VERSION",
                          help="the image tag to go back to (cloud: required; vps: default "
                          "the release before the current one)")
    rollback.add_argument("--digest", metavar="sha256:HEX",
                          help="cloud: the digest of VERSION, when no AWS credentials are "
                          "there to look it up (checked against ECR when they are)")
    rollback.add_argument("--repository", metavar="URL",
                          help="cloud: the stack's ECR repository URL (default: from its "
                          "`image` or `pulumi stack output image`)")
    rollback.add_argument("--root", type=Path, default=Path.cwd(),
                          help="cloud: the checkout holding the stack file (default: .)")
    rollback.add_argument("-i", "--inventory", type=Path, help="vps: the pyinfra inventory")
    rollback.add_argument("--host", help="vps: only this host")
    rollback.add_argument("--format", choices=("markdown", "json"), default="markdown")
    rollback.set_defaults(func=cmd_rollback)
