"""The real Pulumi program, recorded once per test session for each set of inputs.

A recording runs ``stacks/__main__.py`` under Pulumi's mocks in a fresh interpreter
(`tests.support.recorder`): seconds of CPU each. Fixtures in tests/cloud
and tests/plan ask for the same recordings (prod and dev, as manifests and as plans), and
under pytest-xdist every worker runs its own session fixtures. `record_isolated` here has
the recorder's signature and keys each recording as the product's plan cache keys a plan
(`prodstack.plancache`: the contents of the checkout parts the program loads, not the
checkout's path, which the recorder writes as ``<repo>``; the planner's code and the
recorder's; the stack and overrides), with the secrets, image tag and output kind that
only tests pass.
The first caller records; every later caller in the session, on any worker, gets a copy
of that file. A changed input is a new key, never a stale hit.

The memo lives in the session's temporary directory (`use_session_directory`, called by
tests/conftest.py), so each session still runs the real program at least once per
distinct input; outside a pytest session the recorder runs uncached.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from filelock import FileLock

from prodstack import plancache
from tests.support import recorder

REPO = recorder.REPO

_directory: Path | None = None


def use_session_directory(directory: Path | None) -> None:
    """Where this session's recordings are kept (shared by its xdist workers); None: off."""
    global _directory
    _directory = directory
    if directory is not None:
        directory.mkdir(parents=True, exist_ok=True)


def input_digest(
    stack: str,
    overrides: dict[str, str | None] | None,
    *,
    root: Path,
    plan: bool,
    secrets: dict[str, str] | None,
    image_tag: str | None,
) -> str:
    """The key of one recording: the product's plan-cache key (`prodstack.plancache`), with
    what only tests pass (a manifest rather than a plan, secrets, an image tag)."""
    own = hashlib.sha256(Path(recorder.__file__).read_bytes()).hexdigest()
    key = plancache.cloud_key(root, stack, overrides, recording="plan" if plan else "manifest",
                              secrets=secrets or {}, image_tag=image_tag, recorder=own)  # fmt: skip
    assert key is not None, f"no Pulumi.{stack}.yaml in {root}"
    return key


def record_isolated(
    stack: str,
    out: Path,
    overrides: dict[str, str | None] | None = None,
    *,
    root: Path = REPO,
    plan: bool = False,
    secrets: dict[str, str] | None = None,
    image_tag: str | None = None,
) -> dict[str, Any]:
    """`tests.support.recorder.record_isolated`, made once per session per input digest.

    Writes the result to ``out`` as the recorder does. Refusals (UsageError)
    and failures are not kept: every caller sees them raised afresh.
    """
    kwargs = {"root": root, "plan": plan, "secrets": secrets, "image_tag": image_tag}
    if _directory is None or not (root / f"Pulumi.{stack}.yaml").exists():
        return recorder.record_isolated(stack, out, overrides, **kwargs)
    kept = _directory / f"{stack}-{input_digest(stack, overrides, **kwargs)}.json"
    with FileLock(str(kept) + ".lock"):
        if not kept.exists():
            partial = kept.with_name(kept.name + ".partial")
            recorder.record_isolated(stack, partial, overrides, **kwargs)
            partial.replace(kept)
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(kept, out)
    return json.loads(out.read_text())
