"""Fixtures for the cloud profile tests.

The real Pulumi entrypoint runs under mocks in subprocesses (``set_mocks`` is
process-wide, and the app and VPS tests share this pytest session), once per stack,
in parallel, and the manifests are shared by every test in the session.
"""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
STACKS = ("prod", "dev")

for path in (REPO, HERE):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from prodstack_cloud_harness import Manifest, run_harness  # noqa: E402


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


@pytest.fixture(scope="session")
def prod_proxy(tmp_path_factory: pytest.TempPathFactory) -> Manifest:
    """prod with ``rds_proxy: true`` (off in both stack files): recorded once, for the
    proxy's own tests and its weakenings."""
    out = tmp_path_factory.mktemp("cloud-proxy") / "prod-proxy.json"
    m = Manifest(run_harness("prod", out, "--set", "rds_proxy=true"))
    assert m.data["exit_code"] == 0, m.data["stderr"]
    return m
