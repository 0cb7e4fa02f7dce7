"""`ruff check` over the whole tree, with the rule set in pyproject.toml."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = REPO / "pyproject.toml"


def ruff(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("ruff")
    assert binary, "ruff is not on PATH: run the tests with `uv run` after scripts/setup.sh"
    return subprocess.run(
        [binary, "check", "--no-cache", "--output-format=concise", *args],
        cwd=cwd, capture_output=True, text=True, timeout=120,
    )


def test_ruff_finds_nothing_in_the_tree() -> None:
    result = ruff(".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_reports_a_planted_finding_in_a_copy(tmp_path: Path) -> None:
    """The check above can fail: a real module, copied with an unused import, is caught
    under the project's own configuration."""
    source = REPO / "app" / "healthcheck.py"
    clean = tmp_path / "clean.py"
    clean.write_text(source.read_text())
    planted = tmp_path / "planted.py"
    planted.write_text("import fractions  # planted\n" + source.read_text())
    config = ("--config", str(PYPROJECT))
    assert ruff(*config, str(clean), cwd=tmp_path).returncode == 0
    result = ruff(*config, str(planted), cwd=tmp_path)
    assert result.returncode == 1
    assert "F401" in result.stdout, result.stdout
    # The project's rule set, not ruff's defaults: "I" (import order) is not a default rule.
    unsorted = tmp_path / "unsorted.py"
    unsorted.write_text("import sys\nimport json\n\nprint(json, sys)\n")
    result = ruff(*config, str(unsorted), cwd=tmp_path)
    assert result.returncode == 1 and "I001" in result.stdout, result.stdout
