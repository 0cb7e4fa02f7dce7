"""The cost, capacity and recovery figures the docs quote are what `prodstack cost` and
`prodstack choose` print on this repository's plans (prodstack/figuredocs.py): a
committed block that differs is stale."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from prodstack import figuredocs, keydocs

REPO = Path(__file__).resolve().parents[1]
FILES = sorted({name for name, _ in figuredocs.BLOCKS})


@pytest.fixture(scope="module")
def generated() -> dict[tuple[str, str], str]:
    # Plans every stack and size the blocks quote, as `cost` and `choose` plan them.
    return figuredocs.blocks()


def _block(text: str, name: str) -> str:
    begin, end = keydocs.markers(name, figuredocs.GENERATOR)
    return text.split(begin, 1)[1].split(end, 1)[0].strip("\n")


def test_the_generated_figures_are_current(generated):
    assert figuredocs.stale(generated) == [], f"run `{figuredocs.COMMAND}`"


def test_a_hand_edited_figure_is_found(generated, tmp_path):
    for name in FILES:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / name, tmp_path / name)
    readme = tmp_path / "README.md"
    text = readme.read_text()
    table = _block(text, "cost-sizes")
    edited = table.replace("$", "$1", 1)
    assert edited != table
    readme.write_text(text.replace(table, edited))
    assert figuredocs.stale(generated, tmp_path) == [readme]


def test_a_missing_block_is_named(generated, tmp_path):
    for name in FILES:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / name, tmp_path / name)
    doc = tmp_path / "docs" / "cost.md"
    begin, _ = keydocs.markers("cost-results", figuredocs.GENERATOR)
    doc.write_text(doc.read_text().replace(begin, ""))
    with pytest.raises(SystemExit, match="cost.md: no <!-- cost-results:begin"):
        figuredocs.rendered(generated, tmp_path)


def test_the_readme_cost_sample_is_what_the_command_prints():
    # The generator runs the command's code; the command itself must print the same.
    proc = subprocess.run([str(Path(sys.executable).with_name("prodstack")), "cost",
                           "--stack", "prod"], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env={**os.environ})  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    sample = _block((REPO / "README.md").read_text(), "cost-prod")
    body = sample.split("</summary>\n\n", 1)[1].rsplit("\n\n</details>", 1)[0]
    assert proc.stdout.startswith(body + "\n"), "run `python -m prodstack.figuredocs`"


def test_check_exits_1_when_stale_and_0_when_current(monkeypatch, capsys):
    monkeypatch.setattr(figuredocs, "stale", lambda: [])
    assert figuredocs.main(["--check"]) == 0
    monkeypatch.setattr(figuredocs, "stale", lambda: [REPO / "docs" / "cost.md"])
    assert figuredocs.main(["--check"]) == 1
    assert "docs/cost.md is stale: run python -m prodstack.figuredocs" in capsys.readouterr().err
