"""mypy over the host tools (prodstack/host/, the files [tool.mypy] in pyproject.toml
names)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = REPO / "pyproject.toml"


def mypy(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("mypy")
    assert binary, "mypy is not on PATH: run the tests with `uv run`"
    return subprocess.run([binary, "--no-incremental", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300)  # fmt: skip


def test_mypy_finds_nothing_in_the_host_tools() -> None:
    result = mypy()
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_reports_a_planted_error_in_a_copy(tmp_path: Path) -> None:
    """The check above can fail: a host tool, copied with a wrong type, is caught under the
    project's configuration."""
    source = REPO / "prodstack" / "host" / "common.py"
    clean = tmp_path / "clean.py"
    clean.write_text(source.read_text())
    assert mypy("--config-file", str(PYPROJECT), str(clean), cwd=tmp_path).returncode == 0
    planted = tmp_path / "planted.py"
    planted.write_text(source.read_text() + "\n\ndef planted() -> int:\n    return utc_stamp()\n")
    result = mypy("--config-file", str(PYPROJECT), str(planted), cwd=tmp_path)
    assert result.returncode == 1
    assert "planted.py" in result.stdout and "return-value" in result.stdout, result.stdout
