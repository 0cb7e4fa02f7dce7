"""`prodstack logs --profile vps` merges the replicas' lines in time order (prodstack/ops/vps.py).
The merge over real hosts is in tests/vps/test_e2e_operate.py; here, stamps that only the
last nanoseconds tell apart, as Docker writes them."""

from __future__ import annotations

import io
import json

from prodstack.ops import vps


def test_stamps_nanoseconds_apart_sort_in_time_order():
    # Seen from two replicas in one run: 10 ns apart, equal as floats.
    later, earlier = "2026-12-07T16:11:18.130911605Z", "2026-12-07T16:11:18.130911595Z"
    assert vps._sort_key(earlier) < vps._sort_key(later)
    stamps = [later, earlier, "2026-12-07T16:11:18Z", "2026-12-07T17:11:18.1+01:00",
              "2026-12-07T16:11:18.000000001+0000"]  # fmt: skip
    assert sorted(stamps, key=vps._sort_key) == [
        "2026-12-07T16:11:18Z", "2026-12-07T16:11:18.000000001+0000",
        "2026-12-07T17:11:18.1+01:00", earlier, later,
    ]


def test_lines_without_a_stamp_come_first_and_are_kept():
    assert vps._sort_key("") == vps._sort_key("not a time") == (0, 0)


def test_logs_print_the_merged_streams_sorted_to_the_nanosecond(monkeypatch):
    streams = {
        "host/replica-1": ["2026-12-07T16:11:18.130911605Z one-late\n"],
        "host/replica-2": ["2026-12-07T16:11:18.130911595Z two-early\n",
                           "2026-12-07T16:11:19.000000000Z two-last\n"],
    }  # fmt: skip
    sources = [(tag, None, iter(lines)) for tag, lines in streams.items()]
    monkeypatch.setattr(vps, "log_sources", lambda *_: sources)
    out = io.StringIO()
    assert vps.logs([], service=None, since=None, follow=False, grep=None, request_id=None,
                    fmt="json", out=out) == 0  # fmt: skip
    lines = [json.loads(line)["line"] for line in out.getvalue().splitlines()]
    assert lines == ["two-early", "one-late", "two-last"]
