"""What the VPS planner (prodstack/vps_plan.py) uses of pyinfra beyond its documented API,
listed in one place, with the shape the planner relies on.

pyinfra is pinned to one minor version (pyproject.toml). A new pyinfra that renames or
reshapes any of these fails here by name, before any plan or pull-request comment does;
and a planner change that reaches for another internal fails the second test until it is
listed here.
"""

from __future__ import annotations

import ast
import dataclasses
import enum
import importlib
import importlib.util
import inspect
import re
from pathlib import Path

import pytest

PLANNER = Path(__file__).resolve().parents[2] / "prodstack" / "vps_plan.py"

# (module, dotted name) -> what the planner does with it.
INTERNALS: dict[tuple[str, str], str] = {
    ("pyinfra_cli.util", "parse_cli_arg"): "parses --data values as the CLI does",
    ("pyinfra_cli.util", "PYTHON_CODES"): "compiled deploy files, cleared per plan",
    ("pyinfra_cli.util", "load_deploy_file"): "runs deploy.py into the state",
    ("pyinfra_cli.inventory", "_get_group_data"): "reads group_data/*.py as the CLI does",
    ("pyinfra.api.util", "TEMPLATES"): "template cache, cleared per plan",
    ("pyinfra.api.util", "FILE_SHAS"): "file digest cache, cleared per plan",
    ("pyinfra.api.operation", "OperationMeta.did_change"): "patched while planning, to "
    "record which operations' changes an `_if` consults",
    ("pyinfra.api.operation", "get_operation_name_from_func"): "an operation's type name",
    ("pyinfra.api.arguments", "CONNECTOR_ARGUMENT_KEYS"): "keys that are not deploy data",
    ("pyinfra.api.state", "StateStage"): "Connect, Prepare and Execute, set by hand",
    ("pyinfra.api.state", "State.get_op_order"): "operations in order",
    ("pyinfra.api.state", "State.get_op_data_for_host"): "an operation's data on the host",
    ("pyinfra.api.state", "State.get_op_meta"): "an operation's names",
    ("pyinfra.api.state", "StateOperationHostData"): "global_arguments (_if), "
    "command_generator (its closure), operation_meta",
    ("pyinfra.api.host", "Host.get_fact"): "wrapped: the reference host's facts",
    ("pyinfra.api.host", "Host.deploy"): "wrapped: the @deploy names",
    ("pyinfra.api.host", "Host.executing_op_hash"): "which operation a command belongs to",
    ("pyinfra.connectors.fake", "FakeConnector"): "subclassed: records commands and uploads",
    ("pyinfra.connectors.ssh", "SSHConnector.data_meta"): "SSH keys that are not deploy data",
    ("pyinfra.api.connect", "connect_all"): "connects the @fake host",
    ("pyinfra.api.operations", "run_ops"): "runs the operations against @fake",
}


def _module(name: str):
    if name.startswith("pyinfra_cli."):
        # As the planner loads them: without the package's __init__, which would
        # monkey-patch this process with gevent.
        from prodstack.vps_plan import _pyinfra_cli

        return _pyinfra_cli(name.removeprefix("pyinfra_cli."))
    return importlib.import_module(name)


def _resolve(module: str, dotted: str):
    value = _module(module)
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


@pytest.mark.parametrize(("module", "name"), sorted(INTERNALS))
def test_each_internal_the_planner_uses_is_there_with_its_shape(module: str, name: str) -> None:
    value = _resolve(module, name)
    if name in ("PYTHON_CODES", "TEMPLATES", "FILE_SHAS"):
        assert isinstance(value, dict)
    elif name == "StateStage":
        assert issubclass(value, enum.Enum)
        assert {"Connect", "Prepare", "Execute"} <= set(value.__members__)
    elif name == "OperationMeta.did_change":
        # Patched on the class: it must be a plain function in the class's own dict.
        owner = _resolve(module, "OperationMeta")
        assert inspect.isfunction(owner.__dict__["did_change"])
        assert list(inspect.signature(value).parameters) == ["self"]
    elif name == "StateOperationHostData":
        fields = {f.name for f in dataclasses.fields(value)}
        assert {"global_arguments", "command_generator", "operation_meta"} <= fields
    elif name == "Host.executing_op_hash":
        assert "executing_op_hash" in inspect.get_annotations(_resolve(module, "Host"))
    elif name == "SSHConnector.data_meta":
        assert {"ssh_port", "ssh_user", "ssh_key"} <= set(value)
    elif name == "CONNECTOR_ARGUMENT_KEYS":
        assert {"_sudo", "_sudo_user"} <= set(value)
    elif name == "FakeConnector":
        for method in ("run_shell_command", "put_file"):
            params = list(inspect.signature(getattr(value, method)).parameters)
            assert params[:3] == ["self", *{"run_shell_command": ["command", "print_output"],
                                            "put_file": ["filename_or_io",
                                                         "remote_filename"]}[method]]
    elif name == "load_deploy_file":
        assert list(inspect.signature(value).parameters)[:2] == ["state", "filename"]
    elif name == "parse_cli_arg":
        # --data values become Python values as on pyinfra's command line.
        assert value("3") == 3 and value("true") is True and value("[1,2]") == [1, 2]
        assert value("a,b") == "a,b"
    else:
        assert callable(value)


def _names_the_planner_reaches() -> set[tuple[str, str]]:
    """What vps_plan.py imports from pyinfra and pyinfra_cli, and which pyinfra_cli
    attributes it reads: the list above must cover every private or CLI-side one."""
    source = PLANNER.read_text()
    found: set[tuple[str, str]] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pyinfra"):
            for alias in node.names:
                found.add((node.module, alias.name))
    for module, name in re.findall(r'_pyinfra_cli\("(\w+)"\)\.(\w+)', source):
        found.add((f"pyinfra_cli.{module}", name))
    for name in re.findall(r"cli_util\.(\w+)", source):
        found.add(("pyinfra_cli.util", name))
    for name in re.findall(r"pyinfra_util\.(\w+)", source):
        found.add(("pyinfra.api.util", name))
    return found


# The documented API the planner also uses (pyinfra's own "API" docs): not internals.
PUBLIC = {("pyinfra.api", "State"), ("pyinfra.api", "Config"), ("pyinfra.api", "Inventory"),
          ("pyinfra.api", "util"), ("pyinfra.context", "ctx_state"),
          ("pyinfra.context", "ctx_config"), ("pyinfra.context", "ctx_inventory"),
          ("pyinfra.context", "ctx_host")}  # fmt: skip


def test_the_planner_reaches_nothing_of_pyinfra_that_is_not_listed() -> None:
    listed = {(module, name.split(".")[0]) for module, name in INTERNALS}
    unlisted = _names_the_planner_reaches() - listed - PUBLIC
    assert not unlisted, f"list these in INTERNALS with the shape the planner relies on: {unlisted}"


def test_pyinfra_is_pinned_to_the_minor_version_this_list_was_checked_against() -> None:
    pyproject = (PLANNER.parents[1] / "pyproject.toml").read_text()
    (spec,) = re.findall(r'"pyinfra(>=[\d.]+,<[\d.]+)"', pyproject)
    low, high = re.findall(r"[\d.]+", spec)
    assert low.split(".")[:2] == ["3", "10"] and high == "3.11", spec
    assert importlib.util.find_spec("pyinfra") is not None
