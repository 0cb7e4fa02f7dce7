"""Which program the archive runs: the name it was run as, or the first argument."""

from __future__ import annotations

import pytest

from prodstack.host.__main__ import PROGRAMS, program


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_a_link_named_after_a_command_runs_that_program(name):
    assert program([f"/usr/local/sbin/{name}", "status"]) == (PROGRAMS[name],
                                                             [f"/usr/local/sbin/{name}", "status"])


def test_the_archive_run_by_its_own_name_takes_the_program_from_the_first_argument():
    archive = "/usr/local/lib/prodstack/prodstack-host.pyz"
    assert program([archive, "release", "status"]) == ("release", ["prodstack-release", "status"])
    assert program([archive, "prodstack-restore-drill", "cleanup"]) == (
        "drill", ["prodstack-restore-drill", "cleanup"])  # fmt: skip


@pytest.mark.parametrize("argv", [["prodstack-host.pyz"], ["prodstack-host.pyz", "deploy"], []])
def test_anything_else_is_refused_naming_every_command(argv):
    with pytest.raises(SystemExit, match="prodstack-release, prodstack-backup"):
        program(argv)
