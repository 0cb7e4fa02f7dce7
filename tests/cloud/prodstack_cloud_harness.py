"""Test-side helpers over the product's recorder (`prodstack.cloud_plan`).

`run_harness` records the real entrypoint under mocks in a fresh interpreter, with the
test API token and a fixed image tag, so manifests don't depend on app/; each distinct
recording is made once per session (tests/support/recordings.py). `Manifest` and
the policy helpers query what was recorded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prodstack.cloud_plan import REPO
from prodstack.policy_check import (
    check_resource,
    check_stack,
    policy_resources,
    run_all,
    run_policy,
)
from tests.support.recordings import record_isolated

__all__ = ["REPO", "TEST_SECRETS", "Manifest", "check_resource", "check_stack",
           "policy_resources", "run_all", "run_harness", "run_policy"]  # fmt: skip

# Injected in place of secrets a real stack would hold encrypted.
TEST_SECRETS = {"prod": {"prodstack:api_token": "test-api-token-0123456789abcdef0123456789"}}
TEST_IMAGE_TAG = "test-build"


def run_harness(stack: str, out: Path, *extra: str) -> dict[str, Any]:
    """Record ``stack``; ``extra`` is ``--set key=value`` / ``--unset key`` pairs."""
    overrides: dict[str, str | None] = {}
    rest = list(extra)
    while rest:
        flag, item, rest = rest[0], rest[1], rest[2:]
        if flag == "--set":
            key, _, value = item.partition("=")
            overrides[key] = value
        elif flag == "--unset":
            overrides[item] = None
        else:
            raise ValueError(f"unknown flag {flag}")
    return record_isolated(stack, out, overrides, secrets=TEST_SECRETS.get(stack),
                           image_tag=TEST_IMAGE_TAG)  # fmt: skip


class Manifest:
    """Query helpers over a recorded manifest."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data
        self.resources: list[dict[str, Any]] = data["resources"]
        self.outputs: dict[str, Any] = data["outputs"]
        self.warnings: list[str] = data["warnings"]
        self.invokes: list[dict[str, Any]] = data["invokes"]

    def all(self, type_suffix: str) -> list[dict[str, Any]]:
        """Resources whose type ends with ``type_suffix`` (e.g. ``"rds/instance:Instance"``)."""
        return [r for r in self.resources if r["type"].endswith(type_suffix)]

    def inputs(self, type_suffix: str) -> list[dict[str, Any]]:
        return [r["inputs"] for r in self.all(type_suffix)]

    def one(self, type_suffix: str, name: str | None = None) -> dict[str, Any]:
        """Inputs of the single resource of that type (and name, when given)."""
        found = [r for r in self.all(type_suffix) if name is None or r["name"] == name]
        assert len(found) == 1, f"{type_suffix} {name}: {[r['name'] for r in found]}"
        return found[0]["inputs"]

    def named(self, name: str) -> dict[str, Any]:
        found = [r for r in self.resources if r["name"] == name]
        assert len(found) == 1, f"{name}: {len(found)} resources"
        return found[0]

    def containers(self, family: str) -> dict[str, dict[str, Any]]:
        """Container definitions of the task definition ``family``, by name."""
        task = next(i for i in self.inputs("taskDefinition:TaskDefinition")
                    if i["family"] == family)
        return {c["name"]: c for c in json.loads(task["containerDefinitions"])}

    def invoke_args(self, token_suffix: str) -> list[dict[str, Any]]:
        return [i["args"] for i in self.invokes if i["token"].endswith(token_suffix)]


if __name__ == "__main__":
    # By hand: uv run python tests/cloud/prodstack_cloud_harness.py prod /tmp/prod.json
    import sys

    run_harness(sys.argv[1], Path(sys.argv[2]), *sys.argv[3:])
    print(sys.argv[2])
