"""What the host tools share (prodstack/host/common.py)."""

from __future__ import annotations

import os
import stat

import pytest

from prodstack.host import common


def test_a_replacing_write_takes_the_place_whole_with_its_mode(tmp_path):
    path = tmp_path / "metrics" / "prodstack_backup.prom"
    common.write_atomically(str(path), "a 1\n", 0o600)
    assert path.read_text() == "a 1\n" and stat.S_IMODE(path.stat().st_mode) == 0o600
    common.write_atomically(str(path), "a 2\n")
    assert path.read_text() == "a 2\n" and os.listdir(path.parent) == [path.name]


def test_a_failed_write_leaves_the_old_file_and_no_temporary_one(tmp_path):
    path = tmp_path / "dump.pgc"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError), common.replacing(str(path), 0o600, binary=True) as out:
        out.write(b"half")
        raise RuntimeError("pg_dump failed")
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["dump.pgc"]


def test_a_relative_path_needs_no_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    common.write_atomically("here.txt", "x")
    assert (tmp_path / "here.txt").read_text() == "x"


def test_commands_live_in_sbin():
    assert common.command("prodstack-backup") == "/usr/local/sbin/prodstack-backup"
