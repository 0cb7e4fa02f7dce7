"""Pulumi.yaml's config block and the docs' key tables are generated from the config
models (prodstack/keydocs.py): a committed copy that differs is stale."""

from __future__ import annotations

import shutil
from pathlib import Path

from prodstack import keydocs

REPO = Path(__file__).resolve().parents[1]


def test_the_generated_files_are_current():
    assert keydocs.stale() == [], "run `python -m prodstack.keydocs`"


def test_a_hand_edit_of_a_generated_table_is_found(tmp_path):
    for name in ("Pulumi.yaml", "docs/cloud.md", "docs/configuration.md"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / name, tmp_path / name)
    doc = tmp_path / "docs/configuration.md"
    doc.write_text(doc.read_text().replace("| `log_level` |", "| `app_log_level` |"))
    assert keydocs.stale(tmp_path) == [doc]


def test_check_exits_1_when_stale_and_0_when_current(monkeypatch, tmp_path, capsys):
    assert keydocs.main(["--check"]) == 0
    monkeypatch.setattr(keydocs, "stale", lambda repo=REPO: [REPO / "Pulumi.yaml"])
    assert keydocs.main(["--check"]) == 1
    assert "Pulumi.yaml is stale" in capsys.readouterr().err
