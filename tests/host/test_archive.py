"""The host tools' archive (prodstack/host_archive.py): the same bytes on every build, and
each command name runs its program on a bare Debian python3, with the standard library
alone."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from prodstack import host_archive
from prodstack.host.__main__ import PROGRAMS

# Debian 12's interpreter, as on the host; else this one, with site-packages turned off.
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("sbin")
    path = host_archive.write(folder / host_archive.NAME)
    for name in PROGRAMS:
        (folder / name).symlink_to(path)
    return path


def test_two_builds_are_the_same_bytes_with_sorted_entries_and_fixed_times(tmp_path):
    first = host_archive.archive()
    assert first == host_archive.archive()
    assert first.startswith(b"#!/usr/bin/python3\n")
    with zipfile.ZipFile(io.BytesIO(first)) as zf:
        infos = zf.infolist()
    names = [i.filename for i in infos]
    assert names == sorted(names) and "__main__.py" in names
    assert {f"prodstack/host/{m}.py" for m in PROGRAMS.values()} <= set(names)
    assert {i.date_time for i in infos} == {host_archive.STAMP}
    # A file's own time on disk does not reach the archive.
    copy = tmp_path / "host"
    copy.mkdir()
    for source in host_archive.PACKAGE.glob("*.py"):
        (copy / source.name).write_bytes(source.read_bytes())
        os.utime(copy / source.name, (1_000_000_000, 1_000_000_000))
    assert host_archive.archive(copy) == first


def test_a_change_to_a_tool_changes_the_archive(tmp_path):
    copy = tmp_path / "host"
    copy.mkdir()
    for source in host_archive.PACKAGE.glob("*.py"):
        (copy / source.name).write_bytes(source.read_bytes())
    (copy / "audit.py").write_text((copy / "audit.py").read_text() + "\n# changed\n")
    assert host_archive.archive(copy) != host_archive.archive()


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_each_command_name_runs_its_program(archive, name):
    """Run through its link as the host runs it: the kernel reads the shebang."""
    args = ["--help"] if name in ("prodstack-release", "prodstack-audit") else ["no-such"]
    result = subprocess.run([str(archive.parent / name), *args], capture_output=True,
                            text=True, timeout=30)  # fmt: skip
    usage = result.stdout + result.stderr
    if name in ("prodstack-release", "prodstack-audit"):
        assert result.returncode == 0 and usage.startswith(f"usage: {name} "), usage
    elif name == "prodstack-restore":
        assert result.returncode == 1 and "'no-such' is not `latest`" in usage, usage
    else:
        # No settings file here: the tool stops at reading it, after the archive ran it.
        assert "/etc/prodstack/backup.json" in usage, usage


def test_the_tools_import_only_the_standard_library(archive):
    """-I -S: no site-packages, no user site, no PYTHONPATH; only the archive itself."""
    probe = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); "
        + "; ".join(f"import prodstack.host.{m}" for m in sorted(PROGRAMS.values()))
        + "; import prodstack.host.__main__; "
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    result = subprocess.run([PYTHON, "-I", "-S", "-c", probe, str(archive)],
                            capture_output=True, text=True, timeout=30, check=True)  # fmt: skip
    ours = ("prodstack", "__main__")
    outside = [m for m in json.loads(result.stdout)
               if m not in sys.stdlib_module_names and m not in ours]  # fmt: skip
    assert outside == []


def test_release_status_answers_json_from_the_archive(archive, tmp_path):
    """`prodstack status` reads this over SSH: JSON even with no release and no docker."""
    result = subprocess.run([PYTHON, "-I", "-S", str(archive), "release", "history", "--json"],
                            capture_output=True, text=True, timeout=30)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "releases" in json.loads(result.stdout)


def test_an_unknown_name_is_refused_naming_the_commands(archive):
    result = subprocess.run([PYTHON, "-I", "-S", str(archive)], capture_output=True,
                            text=True, timeout=30)  # fmt: skip
    assert result.returncode == 1
    assert "prodstack-release" in result.stderr and "prodstack-audit" in result.stderr
