"""Cloud plans kept by a digest of everything they are made from.

Planning a stack runs the real Pulumi program under Pulumi's mocks: seconds of CPU, most
of it importing the provider SDKs. The same inputs always give the same plan (the planner
is deterministic: `tests/plan/test_cli.py` checks that two plans of one stack are equal to
the byte), so a plan is kept under the digest of its inputs and made again only when one
of them changes:

- the files the program reads from its checkout (`PROGRAM_PARTS`, the stack's
  `Pulumi.<stack>.yaml`, and the app context when the stack names one outside `app/`),
  by content and executable bit, never by path or modification time;
- the planner itself (this package's files) and the versions of Python and of the
  SDKs it runs the program with;
- the call: stack, `--config` overrides, and what is asked for (a plan or a manifest).

A changed input is a new key, never a stale hit. Only plans are kept, and a plan holds no
secret (secrets are `[secret:KEY@VERSION]` markers; see `prodstack.planfile`). Refusals
and failures are never kept.

The VPS profile is not cached: its plan reads files the operator keeps outside the
checkout (the secrets file, the PKI directory, provided certificates, the environment),
and it takes about a second and a half.

Where: `$PRODSTACK_PLAN_CACHE`, else `$XDG_CACHE_HOME/prodstack/plans`, else
`~/.cache/prodstack/plans`. `PRODSTACK_PLAN_CACHE=off` (or `--no-cache`) turns it off.
At most `KEEP` plans are kept; the least recently used go first.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import sys
import tempfile
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from prodstack import REPO

# What the Pulumi program reads from its checkout: stacks/__main__.py and what it imports
# and opens (components/metrics.py reads the VPS alert rules, so both profiles alert alike).
PROGRAM_PARTS = ("Pulumi.yaml", "stacks", "components", "policies", "app",
                 "pyinfra/files/prodstack-alerts.yml")  # fmt: skip
PLANNER_PARTS = ("prodstack",)
SDKS = ("pulumi", "pulumi-aws", "pulumi-docker", "pulumi-random", "pydantic", "pyyaml")
SKIPPED = {"__pycache__", ".pytest_cache", ".ruff_cache"}
KEEP = 200
OFF = {"off", "0", "false", "no"}


def directory() -> Path | None:
    """The cache's directory, or None when it is turned off."""
    chosen = os.environ.get("PRODSTACK_PLAN_CACHE", "")
    if chosen.strip().lower() in OFF:
        return None
    if chosen:
        return Path(chosen).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "prodstack" / "plans"


def digest_files(digest: Any, root: Path, parts: tuple[str, ...]) -> None:
    """Add the files under ``parts`` of ``root`` to ``digest``: relative path, executable
    bit and content, in a fixed order. A missing part adds its absence."""
    for part in parts:
        path = root / part
        if path.is_file() or path.is_symlink():
            files = [path]
        elif path.is_dir():
            files = sorted(
                p for p in path.rglob("*")
                if (p.is_file() or p.is_symlink()) and p.suffix != ".pyc"
                and not SKIPPED & set(p.relative_to(root).parts)
            )  # fmt: skip
        else:
            digest.update(b"missing\0" + part.encode() + b"\0")
            continue
        for file in files:
            if file.is_symlink():
                kind, body = b"l", os.readlink(file).encode()
            else:
                kind, body = (b"x" if os.access(file, os.X_OK) else b"f"), file.read_bytes()
            digest.update(file.relative_to(root).as_posix().encode() + b"\0" + kind)
            digest.update(hashlib.sha256(body).digest())


@functools.cache
def planner_digest() -> bytes:
    """The planner's own code and the interpreter and SDK versions it plans with."""
    digest = hashlib.sha256()
    digest_files(digest, REPO, PLANNER_PARTS)
    digest.update(f"python {sys.version_info[:3]}".encode())
    for name in SDKS:
        try:
            version = metadata.version(name)
        except metadata.PackageNotFoundError:
            version = "absent"
        digest.update(f"\0{name}=={version}".encode())
    return digest.digest()


def _app_context(root: Path, stack_file: Path, overrides: Mapping[str, str | None]) -> Path | None:
    """The app context the stack names, when it is not the checkout's own app/."""
    value = overrides.get("app_context") or overrides.get("prodstack:app_context")
    if value is None:
        try:
            import yaml

            config = (yaml.safe_load(stack_file.read_text(encoding="utf-8")) or {}).get("config")
        except (OSError, ValueError, AttributeError):
            return None
        value = (config or {}).get("prodstack:app_context") if isinstance(config, dict) else None
    if not value or not isinstance(value, str):
        return None
    path = Path(os.path.expanduser(value))
    return (path if path.is_absolute() else root / path).resolve()


def cloud_key(root: Path, stack: str, overrides: Mapping[str, str | None] | None = None,
              **call: Any) -> str | None:  # fmt: skip
    """The key of the plan of ``stack`` in checkout ``root``; None when it has no stack file
    (the planner refuses that, and a refusal is never kept).

    ``call`` holds anything else that changes the result (a manifest rather than a plan,
    test-only secrets or image tag); its values must be JSON.
    """
    root = Path(root).resolve()
    stack_file = root / f"Pulumi.{stack}.yaml"
    if not stack_file.is_file():
        return None
    overrides = dict(overrides or {})
    digest = hashlib.sha256(b"prodstack plan cache 1\0" + planner_digest())
    digest_files(digest, root, (*PROGRAM_PARTS, stack_file.name))
    context = _app_context(root, stack_file, overrides)
    if context is not None and context.is_dir():
        digest.update(b"app context\0")
        digest_files(digest, context, (".",))
    request = {"profile": "cloud", "stack": stack, "overrides": overrides, **call}
    digest.update(json.dumps(request, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:40]


def path_of(key: str) -> Path | None:
    folder = directory()
    return None if folder is None else folder / f"{key}.json"


def load(key: str | None) -> str | None:
    """The kept plan's text, or None."""
    path = path_of(key) if key else None
    if path is None:
        return None
    try:
        text = path.read_text(encoding="utf-8")
        os.utime(path)  # recently used: pruned last
    except (OSError, UnicodeDecodeError):
        return None
    return text


def store(key: str | None, text: str) -> None:
    """Keep a plan's text under ``key``. A cache that cannot be written is no error."""
    path = path_of(key) if key else None
    if path is None:
        return
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".partial",
                                         delete=False, encoding="utf-8") as partial:  # fmt: skip
            partial.write(text)
        os.replace(partial.name, path)
        _prune(path.parent)
    except OSError:
        return


def _prune(folder: Path) -> None:
    kept = sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in kept[KEEP:]:
        old.unlink(missing_ok=True)
