"""Imports: the product's modules form no cycle, and the CLI's wheel works outside the
checkout (no module of the checkout reached through the editable install's path)."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# Every package of the product that imports the others by name (pyinfra's `tasks` are
# imported from pyinfra/, as pyinfra itself does with the deploy's directory).
PACKAGES = {"prodstack": REPO, "stacks": REPO, "components": REPO, "policies": REPO,
            "tasks": REPO / "pyinfra"}  # fmt: skip


def module_names(packages: dict[str, Path]) -> dict[str, Path]:
    found = {}
    for package, base in packages.items():
        for path in sorted((base / package).rglob("*.py")):
            parts = path.relative_to(base).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Each module's imports of the others, at any depth in the file (an import inside a
    function closes a cycle as surely as one at the top, only later)."""
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        wanted: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                wanted.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = name if is_package else name.rpartition(".")[0]
                    for _ in range(node.level - 1):
                        parent = parent.rpartition(".")[0]
                    base = f"{parent}.{base}".strip(".")
                wanted.add(base)
                wanted.update(f"{base}.{alias.name}" for alias in node.names)
        graph[name] = {m for m in wanted if m in modules and m != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_products_modules_import_each_other_without_a_cycle() -> None:
    modules = module_names(PACKAGES)
    assert {"prodstack.cli", "stacks.program", "components.service", "tasks.config"} <= set(modules)
    assert cycles(import_graph(modules)) == []


def test_a_cycle_through_an_import_inside_a_function_is_found(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    (package / "ops").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "cli.py").write_text("from pkg import ops\n")
    (package / "ops" / "__init__.py").write_text("from . import cloud\n")
    (package / "ops" / "cloud.py").write_text("def f():\n    from pkg.cli import main\n")
    graph = import_graph(module_names({"pkg": tmp_path}))
    assert cycles(graph) == [["pkg.cli", "pkg.ops", "pkg.ops.cloud"]]
    (package / "ops" / "cloud.py").write_text("def f():\n    from pkg import other\n")
    assert cycles(import_graph(module_names({"pkg": tmp_path}))) == []


@pytest.fixture(scope="module")
def wheel_contents(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The CLI's wheel, built by the project's own backend and unpacked where it would be
    installed: only the files the wheel holds, away from the checkout."""
    uv = shutil.which("uv")
    assert uv, "uv is not on PATH (scripts/setup.sh installs it)"
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([uv, "build", "--wheel", "--quiet", "-o", str(out), str(REPO)],
                   check=True, capture_output=True, timeout=300)  # fmt: skip
    (wheel,) = out.glob("prodstack-*.whl")
    site = out / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    return site


def test_the_cli_imports_and_answers_help_from_its_wheel_outside_the_checkout(
    wheel_contents: Path,
) -> None:
    # -S: no site processing, so the editable install's .pth (which puts the checkout on
    # sys.path) is not read; the environment's packages are added by hand, without it.
    purelib = sysconfig.get_paths()["purelib"]
    script = (
        "import sys\n"
        f"sys.path[:0] = [{str(wheel_contents)!r}, {purelib!r}]\n"
        "import prodstack.cli\n"
        "parser = prodstack.cli.build_parser()\n"
        "commands = sorted(parser._subparsers._group_actions[0].choices)\n"
        "for command in commands:\n"
        "    try:\n"
        "        prodstack.cli.main([command, '--help'])\n"
        "    except SystemExit as done:\n"
        "        assert done.code == 0, (command, done.code)\n"
        f"checkout = {str(REPO)!r} + '/'\n"
        f"venv = {str(Path(sys.prefix))!r} + '/'\n"
        "from_checkout = sorted(\n"
        "    name for name, module in list(sys.modules.items())\n"
        "    if (getattr(module, '__file__', None) or '').startswith(checkout)\n"
        "    and not module.__file__.startswith(venv))\n"
        "print('COMMANDS', len(commands))\n"
        "print('FROM_CHECKOUT', from_checkout)\n"
    )
    result = subprocess.run([sys.executable, "-S", "-c", script], cwd=wheel_contents.parent,
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "FROM_CHECKOUT []" in result.stdout, result.stdout[-2000:]
    commands = int(result.stdout.split("COMMANDS ", 1)[1].split()[0])
    assert commands >= 10, result.stdout[-500:]
    assert str(wheel_contents) in subprocess.run(
        [sys.executable, "-S", "-c", f"import sys; sys.path[:0] = [{str(wheel_contents)!r}]; "
         "import prodstack; print(prodstack.__file__)"],
        capture_output=True, text=True, cwd=wheel_contents.parent, check=True,
    ).stdout
