"""The split of the e2e files over three shared hosts (tests/conftest.py) names files that
exist and use the shared host, so a renamed file cannot fall silently into the other
group and make it the suite's critical path again."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import OTHER_HOST_FILES, SHARED_HOST

REPO = Path(__file__).resolve().parents[1]


def test_every_listed_file_exists_and_uses_the_shared_host():
    for path in sorted(OTHER_HOST_FILES):
        tree = ast.parse((REPO / path).read_text())
        args = {a.arg for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)
                and node.name.startswith("test_") for a in node.args.args}  # fmt: skip
        assert SHARED_HOST in args, f"{path} has no test using the `{SHARED_HOST}` fixture"


def test_the_other_hosts_take_some_but_not_all_shared_host_files():
    shared = {str(p.relative_to(REPO)) for p in (REPO / "tests/vps").glob("test_e2e*.py")
              if f"({SHARED_HOST}" in p.read_text()}  # fmt: skip
    assert shared > set(OTHER_HOST_FILES)
