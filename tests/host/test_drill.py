"""prodstack-restore-drill's own rules, without a host."""

from __future__ import annotations

import shutil

from prodstack.host import drill


def test_the_drill_refuses_a_restore_that_would_eat_the_live_databases_reserve():
    gib = 1024**3
    usage = shutil._ntuple_diskusage(total=100 * gib, used=80 * gib, free=20 * gib)
    assert drill.space_problem(5 * gib, usage) is None
    # 20 GiB free, a 15 GiB backup: 5 GiB would be left, under the 10 GiB reserve.
    problem = drill.space_problem(15 * gib, usage)
    assert "15360 MiB" in problem and "20480 MiB are free" in problem
    assert drill.space_problem(25 * gib, usage)
