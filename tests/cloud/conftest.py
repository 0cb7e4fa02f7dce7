"""Fixtures for the cloud profile tests.

The real Pulumi entrypoint runs under mocks in subprocesses (``set_mocks`` is
process-wide, and the app and VPS tests share this pytest session), once per stack,
in parallel, and the manifests are shared by every test in the session.
"""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
HARNESS = HERE / "prodstack_cloud_harness.py"
STACKS = ("prod", "dev")

for path in (REPO, HERE):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from prodstack_cloud_harness import Manifest  # noqa: E402


def run_harness(stack: str, out: Path, *extra: str) -> dict[str, Any]:
    """Run the entrypoint for ``stack`` under mocks in a fresh interpreter."""
    proc = subprocess.run(
        [sys.executable, str(HARNESS), stack, str(out), *extra],
        cwd=REPO, capture_output=True, text=True, timeout=240,
    )
    if proc.returncode != 0 or not out.exists():
        raise AssertionError(f"harness failed for {stack}:\n{proc.stdout}\n{proc.stderr}")
    return json.loads(out.read_text())


@pytest.fixture(scope="session")
def manifests(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """``{"prod": manifest, "dev": manifest}`` from the real program under mocks."""
    tmp = tmp_path_factory.mktemp("cloud-manifests")
    with ThreadPoolExecutor(max_workers=len(STACKS)) as pool:
        futures = {s: pool.submit(run_harness, s, tmp / f"{s}.json") for s in STACKS}
        result = {s: f.result() for s, f in futures.items()}
    for stack, manifest in result.items():
        assert manifest["exit_code"] == 0, f"{stack}: {manifest['stderr']}"
    return result


@pytest.fixture(scope="session")
def prod(manifests: dict[str, dict[str, Any]]) -> Manifest:
    return Manifest(manifests["prod"])


@pytest.fixture(scope="session")
def dev(manifests: dict[str, dict[str, Any]]) -> Manifest:
    return Manifest(manifests["dev"])


@pytest.fixture(scope="session")
def both(prod: Manifest, dev: Manifest) -> list[Manifest]:
    return [prod, dev]
