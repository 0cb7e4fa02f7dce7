"""The pack is discovered, not listed: every module of ``policies/`` registers its policies
with one decorator, and ``all_policies`` imports the modules and collects them."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from pulumi_policy import EnforcementLevel, ResourceValidationPolicy, StackValidationPolicy

from policies import all_policies

REPO = Path(__file__).resolve().parents[2]
# The pack's size when it was split into domain modules; a new rule raises it (say so here).
PACK_SIZE = 57


def test_every_module_contributes_and_the_pack_has_every_rule() -> None:
    policies = all_policies()
    assert len(policies) == PACK_SIZE
    names = [p.name for p in policies]
    assert len(names) == len(set(names))
    assert all(p.enforcement_level == EnforcementLevel.MANDATORY for p in policies)
    assert all(isinstance(p, (ResourceValidationPolicy, StackValidationPolicy))
               for p in policies)


def test_discovery_order_is_stable() -> None:
    assert [p.name for p in all_policies()] == [p.name for p in all_policies()]


def test_the_decorated_name_binds_the_policy() -> None:
    from policies.edge import waf_enforces
    from policies.recovery import restore_drills

    assert isinstance(waf_enforces, ResourceValidationPolicy)
    assert waf_enforces.name == "waf-managed-rules-enforced"
    assert isinstance(restore_drills, StackValidationPolicy)
    assert restore_drills.name == "restore-drill-alarmed"


def _pack_names(package_root: Path) -> subprocess.CompletedProcess[str]:
    """The discovered names of the copy of ``policies/`` under ``package_root``, in a
    fresh interpreter (module registries are per process)."""
    code = "from policies import all_policies; print('\\n'.join(p.name for p in all_policies()))"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=package_root, timeout=120,
                          env={"PYTHONPATH": f"{package_root}:{REPO}", "PATH": ""})


NEW_MODULE = '''
from policies._shared import resource_policy, stack_policy


@resource_policy("zz-new-resource-rule", "A rule in a module no list names.",
                 types="aws:s3/bucket:Bucket")
def new_resource_rule(_type, props):
    yield from ()


@stack_policy("zz-new-stack-rule", "A stack rule in the same module.")
def new_stack_rule(args, report):
    pass
'''


def test_a_new_module_is_picked_up_without_editing_any_list(tmp_path: Path) -> None:
    shutil.copytree(REPO / "policies", tmp_path / "policies",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "policies" / "zz_new.py").write_text(textwrap.dedent(NEW_MODULE))
    result = _pack_names(tmp_path)
    assert result.returncode == 0, result.stderr
    names = result.stdout.split()
    assert names[-2:] == ["zz-new-resource-rule", "zz-new-stack-rule"]
    assert len(names) == PACK_SIZE + 2


def test_a_name_used_twice_is_refused(tmp_path: Path) -> None:
    shutil.copytree(REPO / "policies", tmp_path / "policies",
                    ignore=shutil.ignore_patterns("__pycache__"))
    twin = NEW_MODULE.replace("zz-new-resource-rule", "alb-listener-tls")
    (tmp_path / "policies" / "zz_new.py").write_text(textwrap.dedent(twin))
    result = _pack_names(tmp_path)
    assert result.returncode != 0
    assert "more than one policy named alb-listener-tls" in result.stderr


@pytest.mark.parametrize("module", sorted(
    p.stem for p in (REPO / "policies").glob("*.py") if not p.stem.startswith("_")))
def test_each_domain_module_registers_at_least_one_policy(module: str) -> None:
    import importlib

    from policies._shared import REGISTERED

    importlib.import_module(f"policies.{module}")
    assert REGISTERED.get(f"policies.{module}"), module
