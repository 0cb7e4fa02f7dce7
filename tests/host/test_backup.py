"""prodstack-backup's own rules, without a host."""

from __future__ import annotations

from prodstack.host import backup

VERIFY_CORRUPT = """\
2026-12-07 06:28:51.479 P00   INFO: verify command begin 2.45: --repo=2 --stanza=prodstack
2026-12-07 06:28:51.820 P01   INFO: invalid checksum '20261207-061644F/pg_data/base/5/2838.gz'
2026-12-07 06:28:51.828 P00   INFO: stanza: prodstack
                                    status: error
                                      backup: 20261207-061644F, status: invalid, \
total files checked: 964, total valid files: 963
                                        checksum invalid: 1
2026-12-07 06:28:51.828 P00   INFO: verify command end: completed successfully (351ms)
"""
VERIFY_SOUND = """\
2026-12-07 06:28:54.422 P00   INFO: verify command begin 2.45: --repo=2 --stanza=prodstack
2026-12-07 06:28:54.914 P00   INFO: verify command end: completed successfully (494ms)
"""


def test_verify_fails_on_invalid_files_although_pgbackrest_exits_0():
    """pgBackRest 2.45's own answers (recorded against a repository with one corrupted
    file, and a sound one): it exits 0 in both, and only its summary tells them apart."""
    assert backup.verify_problem(0, VERIFY_SOUND) is None
    problem = backup.verify_problem(0, VERIFY_CORRUPT)
    assert "invalid checksum '20261207-061644F/pg_data/base/5/2838.gz'" in problem
    assert "checksum invalid: 1" in problem
    assert backup.verify_problem(56, "ERROR: [056]: unable to open") is not None
