"""The Redis client app.cache uses, against a real server: replies, commands of one tick
sent together, scripts loaded on NOSCRIPT, the subscription, and failing fast when Redis
is gone or stuck."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest

from app.cache import _COUNT
from app.redis_pipeline import PipelinedRedis, RedisReplyError, RedisUnavailable
from prodstack.local_services import RedisServer


@pytest.fixture
def own_redis():
    """A private server: these tests stop and freeze it."""
    server = RedisServer()
    yield server
    server.close()


def subscriber(url: str, messages: list, lost: list) -> PipelinedRedis:
    return PipelinedRedis(url, reply_timeout=2.0, on_message=lambda *m: messages.append(m),
                          on_close=lambda: lost.append(True))


def test_replies_errors_and_scripts(own_redis):
    async def scenario():
        client = PipelinedRedis(own_redis.url)
        try:
            await client.execute("SET", "k", b"v", "EX", 30)
            assert await client.execute("GET", "k") == b"v"
            # One tick: sent together, answered in order, an error only for its own command.
            replies = await asyncio.gather(client.execute("GET", "k"), client.execute("INCR", "k"),
                                           client.execute("GET", "missing"),
                                           return_exceptions=True)
            # A fresh server has no scripts: NOSCRIPT, then EVAL.
            first = await asyncio.gather(_COUNT(client, 1, "rl:a", 3, 60),
                                         _COUNT(client, 1, "rl:b", 1, 60))
            again = await _COUNT(client, 1, "rl:a", 2, 60)
        finally:
            await client.close()
        return replies, first, again

    replies, first, again = asyncio.run(scenario())
    assert replies[0] == b"v" and isinstance(replies[1], RedisReplyError) and replies[2] is None
    assert first == [3, 1] and again == 5
    assert int(own_redis.cli("TTL", "rl:a")) > 0


def test_subscription_gets_messages_and_reports_a_drop(own_redis):
    messages, lost = [], []

    async def scenario():
        client, sub = PipelinedRedis(own_redis.url), subscriber(own_redis.url, messages, lost)
        try:
            await sub.execute("SUBSCRIBE", "alerts:gen")
            await client.execute("PUBLISH", "alerts:gen", "7")
            await sub.execute("PING")  # replies come in order: the message came first
            assert messages == [(b"alerts:gen", b"7")]
            await client.execute("CLIENT", "KILL", "TYPE", "pubsub")
            for _ in range(50):
                if lost:
                    break
                await asyncio.sleep(0.02)
            assert lost, "a killed subscription must be reported"
            await sub.execute("SUBSCRIBE", "alerts:gen")  # on a fresh connection
            await client.execute("PUBLISH", "alerts:gen", "8")
            await sub.execute("PING")
        finally:
            await client.close()
            await sub.close()

    asyncio.run(scenario())
    assert messages[-1] == (b"alerts:gen", b"8")


def test_fails_fast_when_redis_is_stuck_or_down(own_redis):
    async def scenario():
        client, sub = PipelinedRedis(own_redis.url), subscriber(own_redis.url, [], [])
        timings = {}
        try:
            await sub.execute("SUBSCRIBE", "alerts:gen")
            await client.execute("PING")
            os.kill(own_redis.proc.pid, signal.SIGSTOP)  # answers nothing, closes nothing
            try:
                for name, connection, timeout in (("command", client, 0.5),
                                                  ("subscription", sub, 2.0)):
                    started = time.monotonic()
                    with pytest.raises(RedisUnavailable):
                        await connection.execute("PING")
                    timings[name] = (time.monotonic() - started, timeout)
            finally:
                os.kill(own_redis.proc.pid, signal.SIGCONT)
            own_redis.stop()
            started = time.monotonic()
            with pytest.raises(RedisUnavailable):
                await client.execute("GET", "k")
            timings["down"] = (time.monotonic() - started, 0.5)
        finally:
            await client.close()
            await sub.close()
        return timings

    for name, (took, timeout) in asyncio.run(scenario()).items():
        assert took < timeout + 0.5, f"{name} took {took:.2f}s"
