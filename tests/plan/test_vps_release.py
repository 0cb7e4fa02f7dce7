"""prodstack/vps_release.py without a host: how it runs pyinfra's rollback, and bad input."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from prodstack import vps_release
from prodstack.cli import main
from prodstack.errors import UsageError

INVENTORY = Path(__file__).resolve().parents[2] / "pyinfra" / "inventory.py"


def test_rollback_runs_the_real_rollback_deploy_with_the_target_and_host():
    command = vps_release.rollback_command(INVENTORY, "v1.4.2", "web-1")
    assert command[:4] == [sys.executable, "-m", "pyinfra", "-y"]
    assert command[4:6] == [str(INVENTORY), "rollback.py"]
    assert command[6:] == ["--data", "rollback_to=v1.4.2", "--limit", "web-1"]
    assert vps_release.rollback_command(INVENTORY, None, None)[6:] == []


def test_a_missing_inventory_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="no such inventory file"):
        vps_release.rollback(tmp_path / "nope.py", None, None)


def test_a_hostile_target_is_refused_by_rollback_py_before_any_operation(tmp_path, capfd):
    # This machine through pyinfra's local connector: rollback.py refuses the value while
    # pyinfra loads it, before any operation runs.
    inventory = tmp_path / "inventory.py"
    inventory.write_text('web = ["@local"]\n')
    code = vps_release.rollback(inventory, "v1; rm -rf /", None)
    out, err = capfd.readouterr()
    assert code != 0 and out == ""
    assert "rollback_to: 'v1; rm -rf /' is invalid; allowed: a version" in err


def test_the_rollback_verb_needs_an_inventory(capsys):
    assert main(["rollback", "--profile", "vps"]) == 2
    assert "needs -i INVENTORY" in capsys.readouterr().err
    assert main(["rollback", "--profile", "vps", "-i", "/nonexistent/inventory.py"]) == 2
    assert "no such inventory file" in capsys.readouterr().err


def test_the_rollback_verb_has_help_with_examples(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["rollback", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "prodstack rollback --profile vps -i pyinfra/inventory.py --to" in out
