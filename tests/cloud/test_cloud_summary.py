"""A short, readable summary per stack (tests/cloud/golden/<stack>.md): which resources the
program registers, under which component, and which outputs and warnings it has.

A resource added, removed or renamed (a rename is a replacement in `pulumi up`) shows up
here as one line to review. What each resource's inputs must hold is not here: the named
checks in tests/cloud and the policy mutation table (test_cloud_mutations.py) say which
invariant a change breaks. After a deliberate change:

    PRODSTACK_UPDATE_GOLDEN=1 uv run pytest tests/cloud/test_cloud_summary.py
    git diff tests/cloud/golden/
"""

from __future__ import annotations

import difflib
import os
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

GOLDEN = Path(__file__).resolve().parent / "golden"
UPDATE = os.environ.get("PRODSTACK_UPDATE_GOLDEN") == "1"


def _component(resource: dict[str, Any], by_urn: dict[str, dict[str, Any]]) -> str:
    """The top-level component a resource belongs to ("-" for the stack's own)."""
    top = None
    parent = resource.get("parent")
    while parent and parent in by_urn:
        top = by_urn[parent]
        parent = top.get("parent")
    return f"{top['type']}::{top['name']}" if top else "-"


def summary(manifest: dict[str, Any]) -> str:
    resources = manifest["resources"]
    by_urn = {r["urn"]: r for r in resources}
    custom = [r for r in resources if r.get("custom")]
    lines = [f"# {manifest['stack']}: {len(custom)} resources in "
             f"{len(resources) - len(custom)} components", ""]  # fmt: skip
    groups: dict[str, list[str]] = {}
    for r in custom:
        groups.setdefault(_component(r, by_urn), []).append(f"{r['type']}::{r['name']}")
    for component in sorted(groups):
        lines += [f"## {component} ({len(groups[component])})", ""]
        lines += [f"- {entry}" for entry in sorted(groups[component])] + [""]
    lines += ["## Resource types", ""]
    for type_, n in sorted(Counter(r["type"] for r in custom).items()):
        lines.append(f"- {type_}: {n}")
    lines += ["", "## Outputs", ""] + [f"- {name}" for name in sorted(manifest["outputs"])]
    lines += ["", "## Warnings", ""] + ([f"- {w}" for w in manifest["warnings"]] or ["none"])
    return "\n".join(lines) + "\n"


def test_summary_counts_only_custom_resources_and_files_them_under_their_top_component():
    manifest = {"stack": "t", "outputs": {"b": 1, "a": 2}, "warnings": [], "resources": [
        {"urn": "c::top", "type": "prodstack:x:X", "name": "top", "custom": False},
        {"urn": "c::mid", "type": "prodstack:y:Y", "name": "mid", "custom": False,
         "parent": "c::top"},
        {"urn": "r::1", "type": "aws:s3/bucket:Bucket", "name": "logs", "custom": True,
         "parent": "c::mid"},
        {"urn": "r::2", "type": "aws:s3/bucket:Bucket", "name": "free", "custom": True},
    ]}  # fmt: skip
    text = summary(manifest)
    assert text.startswith("# t: 2 resources in 2 components\n")
    assert "## prodstack:x:X::top (1)\n\n- aws:s3/bucket:Bucket::logs\n" in text
    assert "## - (1)\n\n- aws:s3/bucket:Bucket::free\n" in text
    assert "- aws:s3/bucket:Bucket: 2\n" in text and "## Outputs\n\n- a\n- b\n" in text


@pytest.mark.parametrize("stack", ["prod", "dev"])
def test_registered_resources_match_the_reviewed_summary(manifests: dict, stack: str) -> None:
    path = GOLDEN / f"{stack}.md"
    current = summary(manifests[stack])
    if UPDATE:
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(current)
        return
    assert path.exists(), f"no summary for {stack}; run with PRODSTACK_UPDATE_GOLDEN=1"
    reviewed = path.read_text()
    if current != reviewed:
        diff = "".join(difflib.unified_diff(
            reviewed.splitlines(keepends=True), current.splitlines(keepends=True),
            f"golden/{stack}.md (reviewed)", f"{stack} (now)", n=1,
        ))  # fmt: skip
        pytest.fail(f"{stack}: the registered resources changed; review, then "
                    f"PRODSTACK_UPDATE_GOLDEN=1:\n{diff[:6000]}")  # fmt: skip
