"""How a replica follows the cache generation, without a server: the ordering rules."""

from __future__ import annotations

from app import metrics
from app.cache import Cache


def fresh_cache() -> Cache:
    cache = Cache("redis://127.0.0.1:1/0", rate_limit=10, ttl_seconds=5)
    cache._generation = 5
    cache._local["list:1:20:"] = (5, float("inf"), b"{}")
    return cache


def test_a_late_announcement_never_moves_the_generation_back():
    cache = fresh_cache()
    cache._generation = 7  # this replica's own bump already answered 7
    cache._on_generation(b"alerts:gen", b"6")  # ...before the announcement of 6 arrived
    assert cache._generation == 7
    cache._on_generation(b"alerts:gen", b"7")
    assert cache._generation == 7


def test_an_announcement_going_down_means_redis_lost_its_data():
    cache = fresh_cache()
    cache._on_generation(b"alerts:gen", b"6")
    assert cache._generation == 6
    cache._on_generation(b"alerts:gen", b"1")  # FLUSHALL, then a write
    assert cache._generation == 1
    assert cache._local == {}


def test_announcements_while_subscribing_are_kept():
    cache = fresh_cache()
    cache._generation = None
    cache._on_generation(b"alerts:gen", b"9")
    assert cache._generation is None and cache._announced == 9


def test_metric_labels_for_alert_types_are_bounded():
    seen = {metrics.type_label(f"type-{i}") for i in range(metrics.TYPE_LABELS_MAX + 10)}
    assert "other" in seen
    assert len(seen) <= metrics.TYPE_LABELS_MAX + 1


def test_concurrent_misses_build_the_response_once():
    import asyncio

    from app.cache import Gate

    calls = 0

    async def build() -> bytes:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        return b"page"

    async def stampede():
        cache = fresh_cache()
        gate = Gate(generation="5")
        bodies = await asyncio.gather(*(cache.fill(gate, "list:1:20:", build) for _ in range(30)))
        await cache.close()
        return bodies

    assert asyncio.run(stampede()) == [b"page"] * 30
    assert calls == 1
