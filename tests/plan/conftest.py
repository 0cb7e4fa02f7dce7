"""Plans made by the real planners, once per session, shared by the diff and CLI tests.

Cloud plans run the real Pulumi program under mocks, each in a fresh interpreter
(`set_mocks` is process-wide), two at a time on this 2-core machine, each once per
session (tests/support/recordings.py: test_cost.py's prod and dev are these).
"""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from prodstack import planfile
from prodstack.cloud_plan import REPO
from tests.support.recordings import record_isolated

# name -> (stack, config overrides, root variant)
CLOUD_VARIANTS: dict[str, tuple[str, dict[str, str], str | None]] = {
    "prod": ("prod", {}, None),
    "prod-replicas": ("prod", {"replicas": "5"}, None),
    "prod-min-replicas": ("prod", {"min_replicas": "2"}, None),
    "prod-log-level": ("prod", {"log_level": "DEBUG"}, None),
    "prod-backup-days": ("prod", {"backup_retention_days": "14"}, None),
    "prod-vpc-cidr": ("prod", {"vpc_cidr": "10.1.0.0/16"}, None),
    "prod-no-cdn": ("prod", {"cdn": "false"}, None),
    "prod-token-a": ("prod", {}, "token-a"),
    "prod-token-b": ("prod", {}, "token-b"),
    "dev": ("dev", {}, None),
}
# Two ciphertexts of `prodstack:api_token`, as `pulumi config set --secret` writes them.
CIPHERTEXTS = {
    "token-a": "v1:8mWq2ZyC1w0AAAAA:Q0lQSEVSVEVYVC1BLTAxMjM0NTY3ODlhYmNkZWY=",
    "token-b": "v1:Rk3pLx9T0a1BBBBB:Q0lQSEVSVEVYVC1CLTk4NzY1NDMyMTBmZWRjYmE=",
}
# The AMP workspace runs the VPS profile's API alert rules, read from their one file.
CHECKOUT_PARTS = ("Pulumi.yaml", "Pulumi.prod.yaml", "Pulumi.dev.yaml", "stacks", "components",
                  "policies", "app", "pyinfra/files/prodstack-alerts.yml")  # fmt: skip


def checkout_copy(dest: Path) -> Path:
    """A copy of the parts of this checkout the Pulumi program reads."""
    dest.mkdir(parents=True)
    for part in CHECKOUT_PARTS:
        source = REPO / part
        if source.is_dir():
            shutil.copytree(source, dest / part,
                            ignore=shutil.ignore_patterns("__pycache__", "wheelhouse"))
        else:
            (dest / part).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / part)
    return dest


def with_secret_token(root: Path, ciphertext: str) -> Path:
    stack_file = root / "Pulumi.prod.yaml"
    stack_file.write_text(stack_file.read_text() + f"  prodstack:api_token:\n"
                          f"    secure: {ciphertext}\n")  # fmt: skip
    return root


@pytest.fixture(scope="session")
def cloud_plans(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("cloud-plans")
    roots = {
        name: with_secret_token(checkout_copy(tmp / name), text)
        for name, text in CIPHERTEXTS.items()
    }

    def make(name: str) -> dict[str, Any]:
        stack, overrides, variant = CLOUD_VARIANTS[name]
        out = tmp / f"{name}.json"
        record_isolated(stack, out, overrides, root=roots.get(variant, REPO), plan=True)
        return planfile.load(out)

    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(make, name) for name in CLOUD_VARIANTS}
        return {name: future.result() for name, future in futures.items()}


@pytest.fixture(scope="session")
def cloud_plan_files(cloud_plans, tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("cloud-plan-files")
    paths = {}
    for name, plan in cloud_plans.items():
        paths[name] = tmp / f"{name}.json"
        planfile.write(plan, paths[name])
    return paths
