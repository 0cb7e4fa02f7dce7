"""Whole-manifest snapshots per stack: any change to what the program registers must be reviewed.

Regenerate after a deliberate change, then review the diff like code:

    PRODSTACK_UPDATE_SNAPSHOTS=1 uv run pytest tests/cloud/test_cloud_snapshots.py
    git diff tests/cloud/snapshots/
"""

from __future__ import annotations

import difflib
import json
import os
from pathlib import Path

import pytest

SNAPSHOTS = Path(__file__).resolve().parent / "snapshots"
UPDATE = os.environ.get("PRODSTACK_UPDATE_SNAPSHOTS") == "1"


def snapshot_text(manifest: dict) -> str:
    """The reviewed part of a manifest: resources (sorted), exports, warnings."""
    resources = sorted(manifest["resources"], key=lambda r: (r["type"], r["name"]))
    body = {
        "stack": manifest["stack"],
        "outputs": manifest["outputs"],
        "warnings": manifest["warnings"],
        "resource_count": len(resources),
        "resources": resources,
    }
    return json.dumps(body, indent=1, sort_keys=True) + "\n"


@pytest.mark.parametrize("stack", ["prod", "dev"])
def test_manifest_matches_reviewed_snapshot(manifests: dict, stack: str) -> None:
    path = SNAPSHOTS / f"{stack}.json"
    current = snapshot_text(manifests[stack])
    if UPDATE:
        SNAPSHOTS.mkdir(exist_ok=True)
        path.write_text(current)
        return
    assert path.exists(), f"no snapshot for {stack}; run with PRODSTACK_UPDATE_SNAPSHOTS=1"
    reviewed = path.read_text()
    if current != reviewed:
        diff = "".join(difflib.unified_diff(
            reviewed.splitlines(keepends=True), current.splitlines(keepends=True),
            f"snapshots/{stack}.json (reviewed)", f"{stack} (now)", n=2,
        ))
        pytest.fail(
            f"{stack} manifest changed; review, then PRODSTACK_UPDATE_SNAPSHOTS=1:\n"
            + diff[:6000]
        )
