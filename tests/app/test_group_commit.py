"""The insert batcher: one INSERT per batch, batches that grow with load, errors to all."""

from __future__ import annotations

import asyncio

import pytest

from app.db import _InsertBatcher


class FakeDatabase:
    def __init__(self, fail: bool = False) -> None:
        self.batches: list[int] = []
        self.fail = fail

    async def _run(self, method, query, *columns, retry):
        ids = columns[0]
        self.batches.append(len(ids))
        await asyncio.sleep(0.02)
        if self.fail:
            raise ConnectionRefusedError("database down")
        return [{"id": i} for i in ids]


def submit_many(db, n: int, spread_ticks: int):
    async def run():
        batcher = _InsertBatcher(db)
        waiters = []
        for i in range(n):
            waiters.append(batcher.submit((i, "m", "t", "low", "r", None, None)))
            if spread_ticks > 1 and i % (n // spread_ticks) == 0:
                await asyncio.sleep(0)  # later submissions land in later ticks
        return await asyncio.gather(*waiters, return_exceptions=True)

    return asyncio.run(run())


def test_every_row_gets_its_own_stored_row_back():
    db = FakeDatabase()
    results = submit_many(db, 100, spread_ticks=10)
    assert [r["id"] for r in results] == list(range(100))


def test_batches_grow_while_writes_are_in_flight():
    db = FakeDatabase()
    submit_many(db, 100, spread_ticks=10)
    assert sum(db.batches) == 100
    assert len(db.batches) <= 4  # two in flight, the rest gathered behind them


def test_a_failed_write_fails_every_row_in_its_batch():
    db = FakeDatabase(fail=True)
    results = submit_many(db, 10, spread_ticks=1)
    assert all(isinstance(r, ConnectionRefusedError) for r in results)


@pytest.mark.parametrize("n", [1, 3])
def test_light_load_leaves_at_once(n):
    db = FakeDatabase()
    submit_many(db, n, spread_ticks=1)
    assert db.batches == [n]
