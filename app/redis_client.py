"""Redis through redis-py's asyncio client (with hiredis), behind app.cache's interface.

`Commands` runs one command per call on a pooled connection, and a batch as one
non-transactional pipeline (one write, one read). `Subscriber` holds one PubSub
connection: replies to its commands (the subscribe confirmation, PONG) resolve a FIFO
of futures, published messages go to `on_message`, and a dropped connection calls
`on_close` once, after which app.cache subscribes again on a fresh connection.

redis-py retries a failed command three times with backoff by default. Here a failure
is reported at once instead, so the rate limit fails open and caching is bypassed within
one timeout rather than after several.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisError, ResponseError

from app.redis_pipeline import RedisReplyError, RedisUnavailable


def _connect(url: str, connect_timeout: float, reply_timeout: float) -> aioredis.Redis:
    return aioredis.Redis.from_url(
        url, socket_connect_timeout=connect_timeout, socket_timeout=reply_timeout,
        retry=Retry(NoBackoff(), 0),
    )


def _translate(exc: RedisError) -> Exception:
    if isinstance(exc, ResponseError):
        # redis-py drops the error code from the text; app.cache looks for NOSCRIPT.
        return RedisReplyError(f"NOSCRIPT {exc}" if isinstance(exc, NoScriptError) else str(exc))
    return RedisUnavailable(type(exc).__name__)


class Commands:
    def __init__(self, url: str, *, connect_timeout: float = 0.5,
                 reply_timeout: float = 0.5) -> None:
        self._redis = _connect(url, connect_timeout, reply_timeout)

    async def execute(self, *args):
        try:
            return await self._redis.execute_command(*args)
        except RedisError as exc:
            raise _translate(exc) from None

    async def execute_many(self, commands: list[tuple]) -> list:
        """One reply or exception per command, in order."""
        pipe = self._redis.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        try:
            results = await pipe.execute(raise_on_error=False)
        except RedisError as exc:
            return [_translate(exc)] * len(commands)
        return [_translate(r) if isinstance(r, RedisError) else r for r in results]

    async def close(self) -> None:
        await self._redis.aclose()


class Subscriber:
    def __init__(self, url: str, *, connect_timeout: float = 0.5, reply_timeout: float = 2.0,
                 on_message, on_close) -> None:
        self._redis = _connect(url, connect_timeout, reply_timeout)
        self._reply_timeout = reply_timeout
        self._on_message = on_message
        self._on_close = on_close
        self._pubsub: aioredis.client.PubSub | None = None
        self._reader: asyncio.Task | None = None
        self._waiters: deque[asyncio.Future] = deque()

    async def execute(self, *args):
        """Send a command on the subscription (SUBSCRIBE, PING) and return its reply."""
        if self._pubsub is None:
            self._pubsub = self._redis.pubsub()
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await self._pubsub.execute_command(*args)
        except RedisError as exc:
            await self._lost()
            raise _translate(exc) from None
        if self._reader is None:
            self._reader = asyncio.ensure_future(self._read(self._pubsub))
        try:
            return await asyncio.wait_for(waiter, self._reply_timeout)
        except TimeoutError:
            # A subscription that stopped answering would miss invalidations silently.
            await self._lost()
            raise RedisUnavailable("reply timed out") from None

    async def _read(self, pubsub) -> None:
        try:
            while True:
                reply = await pubsub.parse_response(block=True)
                if isinstance(reply, list) and reply and reply[0] == b"message":
                    self._on_message(reply[1], reply[2])
                elif self._waiters:
                    waiter = self._waiters.popleft()
                    if not waiter.done():
                        waiter.set_result(reply)
        except (RedisError, OSError):
            self._reader = None  # ending on its own: _lost must not cancel this task
            await self._lost()

    async def _lost(self) -> None:
        had_connection = self._pubsub is not None
        await self.close()
        if had_connection:
            self._on_close()

    async def close(self) -> None:
        pubsub, reader, self._pubsub, self._reader = self._pubsub, self._reader, None, None
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(RedisUnavailable("connection lost"))
                waiter.exception()  # whoever awaits it still gets it; nobody else must
        if reader is not None and reader is not asyncio.current_task():
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        if pubsub is not None:
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()
