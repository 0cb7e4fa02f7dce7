"""prodstack-restore's targets: which pgBackRest options each accepted target becomes, and
what it refuses before anything stops."""

from __future__ import annotations

import pytest

from prodstack.host import restore


@pytest.mark.parametrize(
    ("target", "options"),
    [
        ("latest", ["--type=default"]),
        ("20261201-020003F", ["--set=20261201-020003F", "--type=immediate",
                              "--target-action=promote"]),
        ("20261201-020003F_20261202-020004D",
         ["--set=20261201-020003F_20261202-020004D", "--type=immediate",
          "--target-action=promote"]),
        ("2026-12-01T10:15:00Z", ["--type=time", "--target=2026-12-01 10:15:00.000000+00",
                                  "--target-action=promote"]),
        ("2026-12-01T12:15:00.5+02:00",
         ["--type=time", "--target=2026-12-01 10:15:00.500000+00", "--target-action=promote"]),
    ],
)  # fmt: skip
def test_restore_targets_map_to_pgbackrest_options(target, options):
    assert restore.parse_target(target) == options


@pytest.mark.parametrize("target", ["yesterday", "2026-12-01T10:15:00", "20261201", ""])
def test_a_bad_restore_target_is_refused_before_anything_stops(target):
    with pytest.raises(SystemExit, match="not `latest`, a backup label"):
        restore.parse_target(target)
