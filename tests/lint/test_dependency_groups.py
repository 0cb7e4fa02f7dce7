"""Each part of the repository imports only what its own install brings.

The API image installs `[project.dependencies]` alone; an operator running `pulumi up`
installs those plus the `cloud` group, one running pyinfra plus the `vps` group. A
module reached only through another group (the `dev` group is always present in this
test session) works here and fails there, at deploy time. The closure of each install
is read from uv.lock, and every third-party import in the part's sources must resolve
to a distribution inside it.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# (part, source directories, dependency groups added to the project's own dependencies)
PARTS = [
    ("the API image", ["app"], []),
    ("the cloud program", ["components", "stacks", "policies"], ["cloud"]),
    ("the VPS deploy", ["pyinfra"], ["vps"]),
    ("the prodstack CLI", ["prodstack"], ["cloud", "vps"]),
]
# Packages of this repository, importable from its root or (for pyinfra's deploy) from
# pyinfra/, as pyinfra itself puts it on sys.path.
LOCAL = {"app", "components", "stacks", "policies", "prodstack", "bench", "tests",
         *(p.stem for p in (REPO / "pyinfra").iterdir() if p.suffix == ".py" or p.is_dir())}
LOCAL.discard("pyinfra")  # the directory's own name is the library's


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _closure(groups: list[str]) -> set[str]:
    """Every distribution the project's dependencies and ``groups`` install, extras
    followed: a walk over (package, extra) pairs, each visited once."""
    lock = tomllib.loads((REPO / "uv.lock").read_text())
    packages = {_normal(p["name"]): p for p in lock["package"]}
    project = packages["prodstack"]
    wanted = [*project.get("dependencies", []),
              *(d for group in groups for d in project["dev-dependencies"][group])]

    def pairs(deps: list[dict]) -> list[tuple[str, str | None]]:
        return [(_normal(d["name"]), extra) for d in deps for extra in (None, *d.get("extra", []))]

    todo, seen = pairs(wanted), set()
    while todo:
        pair = todo.pop()
        if pair in seen:
            continue
        seen.add(pair)
        name, extra = pair
        package = packages[name]
        deps = package.get("dependencies", []) if extra is None else (
            package.get("optional-dependencies", {}).get(extra, []))
        todo += pairs(deps)
    return {name for name, _ in seen}


def _imports(directories: list[str]) -> dict[str, str]:
    """Top-level third-party module -> the first file importing it."""
    found: dict[str, str] = {}
    for directory in directories:
        for path in sorted((REPO / directory).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if top not in sys.stdlib_module_names and top not in LOCAL:
                        found.setdefault(top, str(path.relative_to(REPO)))
    return found


@pytest.mark.parametrize("part, directories, groups", PARTS, ids=[p[0] for p in PARTS])
def test_every_import_comes_with_the_parts_own_install(part, directories, groups):
    installed = _closure(groups)
    providers = importlib.metadata.packages_distributions()
    imports = _imports(directories)
    assert imports, f"{part}: no third-party import found in {directories}"
    missing = {
        module: where for module, where in imports.items()
        if not {_normal(d) for d in providers.get(module, [])} & installed
    }  # fmt: skip
    assert not missing, (
        f"{part} imports modules its install ({', '.join(['project', *groups])}) does not "
        f"bring: {missing}; add their distributions to that group in pyproject.toml"
    )
