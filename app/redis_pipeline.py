"""A Redis connection that pipelines every command issued in the same event-loop tick.

Under load a replica has dozens of requests in flight; sending their commands as one
write and parsing the replies with hiredis's C reader costs a fraction of a
command-at-a-time client with a connection pool. It speaks only what app.cache needs:
commands, replies, and one pub/sub subscription.

Redis answers in order on one connection, so replies resolve a FIFO of futures. A
connection given `on_message` is a subscriber: pub/sub messages go to that callback.

Why not redis-py. Measured 2026-12-01 against redis-py 8.1.0's asyncio client with hiredis
3.5.0 (sync batches as one `pipeline(transaction=False)`, PubSub re-made on loss or a
missed PONG, socket timeouts, retries off so it fails open), both in one bench/run.py run
(the side-by-side version is at commit 974d063): 3 replicas per client behind nginx, one
PostgreSQL and one Redis, 2 CPUs. redis-py ÷ this client, median of per-round req/s ratios:

    route                        7 rounds x 6 s   15 rounds x 3 s
    GET /health/live (no Redis)      0.843            1.038
    GET /api/v1/alerts (cached)      1.012            1.098
    GET /api/v1/alerts/{id}          0.996            0.909
    POST /api/v1/alerts              0.950            0.959

The rule was: switch if redis-py is within 5% on every route, or ahead. It was not shown
to be. POST, the one route with Redis on its path (a generation bump per write tick), came
out 4-5% slower in both runs, at the limit. The rest is noise wider than the limit:
per-round ratios spread 0.6-1.6 on every route, including /health/live, which sends Redis
nothing, and a route's median ratio moved by up to 0.19 between the two runs. A quieter
machine could settle it; until then this client stays. Figures: bench/results/
20261201T102051Z.md and 20261201T103404Z.md.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from urllib.parse import parse_qs, unquote, urlsplit

import hiredis


class RedisUnavailable(ConnectionError):
    """The connection is closed, could not be made, or a reply did not come in time."""


class RedisReplyError(Exception):
    """Redis answered with an error (for example NOSCRIPT)."""


class _Protocol(asyncio.Protocol):
    def __init__(self, loop: asyncio.AbstractEventLoop, reply_timeout: float,
                 on_message=None, on_close=None) -> None:
        self._loop = loop
        self._on_message = on_message
        self._on_close = on_close
        self._reply_timeout = reply_timeout
        self._reader = hiredis.Reader()
        # (future, deadline) in send order; replies arrive in the same order.
        self._waiters: deque[tuple[asyncio.Future, float]] = deque()
        self._watchdog: asyncio.TimerHandle | None = None
        self._outgoing: list[bytes] = []
        self._flush_pending = False
        self.transport: asyncio.Transport | None = None
        self.closed = False

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        while True:
            reply = self._reader.gets()
            if reply is False:
                return
            if (self._on_message is not None and isinstance(reply, list)
                    and reply and reply[0] == b"message"):
                self._on_message(reply[1], reply[2])
                continue
            waiter, _ = self._waiters.popleft()
            if waiter.done():
                continue
            if isinstance(reply, hiredis.ReplyError):
                waiter.set_exception(RedisReplyError(str(reply)))
            else:
                waiter.set_result(reply)

    def connection_lost(self, exc) -> None:
        self.closed = True
        if self._watchdog is not None:
            self._watchdog.cancel()
        while self._waiters:
            waiter, _ = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(RedisUnavailable("connection lost"))
        if self._on_close is not None:
            self._on_close()

    def send(self, packed: bytes) -> asyncio.Future:
        if self.closed:
            raise RedisUnavailable("connection closed")
        waiter = self._loop.create_future()
        self._waiters.append((waiter, self._loop.time() + self._reply_timeout))
        self._outgoing.append(packed)
        if not self._flush_pending:
            self._flush_pending = True
            self._loop.call_soon(self._flush)
        if self._watchdog is None:
            self._watchdog = self._loop.call_later(self._reply_timeout, self._check_deadline)
        return waiter

    def _flush(self) -> None:
        self._flush_pending = False
        if self.transport is not None and not self.closed:
            self.transport.write(b"".join(self._outgoing))
        self._outgoing.clear()

    def _check_deadline(self) -> None:
        """One timer per connection, not per command: replies come in order, so only the
        oldest outstanding command can be the first to miss its deadline."""
        self._watchdog = None
        if not self._waiters or self.closed:
            return
        waiter, deadline = self._waiters[0]
        now = self._loop.time()
        if now >= deadline:
            # A reply this late means the server or the path to it is stuck: drop the
            # connection so every later command fails fast instead of queueing behind it.
            if not waiter.done():
                waiter.set_exception(RedisUnavailable("reply timed out"))
            self.close()
            return
        self._watchdog = self._loop.call_later(deadline - now, self._check_deadline)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        self.closed = True
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None


def _tls_context(query: str) -> ssl.SSLContext:
    """Certificate and host name verified: against the system's CAs (ElastiCache), or only
    against `?ssl_ca_certs=FILE` (redis-py's name for it), a private CA (the VPS split
    layout's, see pyinfra/tasks/pki.py)."""
    cafile = parse_qs(query).get("ssl_ca_certs", [None])[0]
    return ssl.create_default_context(cafile=cafile)


class PipelinedRedis:
    def __init__(self, url: str, *, connect_timeout: float = 0.5, reply_timeout: float = 0.5,
                 on_message=None, on_close=None):
        self._url = url
        self._on_message = on_message
        self._on_close = on_close
        self._connect_timeout = connect_timeout
        self._reply_timeout = reply_timeout
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Future | None = None

    async def _connect(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        parts = urlsplit(self._url)

        def factory() -> _Protocol:
            return _Protocol(loop, self._reply_timeout, self._on_message, self._on_close)

        if parts.scheme == "unix":
            coro = loop.create_unix_connection(factory, parts.path)
        else:
            tls = _tls_context(parts.query) if parts.scheme == "rediss" else None
            coro = loop.create_connection(
                factory, parts.hostname or "localhost", parts.port or 6379, ssl=tls
            )
        try:
            _, protocol = await asyncio.wait_for(coro, self._connect_timeout)
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            raise RedisUnavailable(f"connect failed: {type(exc).__name__}") from None
        handshake = []
        if parts.password:
            user = unquote(parts.username) if parts.username else None
            handshake.append(("AUTH", user, unquote(parts.password)) if user else
                             ("AUTH", unquote(parts.password)))
        db = parts.path.lstrip("/")
        if parts.scheme != "unix" and db and db != "0":
            handshake.append(("SELECT", db))
        try:
            for command in handshake:
                await protocol.send(hiredis.pack_command(command))
        except RedisReplyError as exc:
            protocol.close()
            # The reply text, never the command: the command holds the password.
            raise RedisUnavailable(f"handshake refused: {str(exc).split(' ')[0]}") from None
        return protocol

    async def _connection(self) -> _Protocol:
        protocol = self._protocol
        if protocol is not None and not protocol.closed:
            return protocol
        # One connect at a time; concurrent callers wait for the same attempt.
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._connect())
        connecting = self._connecting
        try:
            self._protocol = await asyncio.shield(connecting)
        finally:
            if self._connecting is connecting and connecting.done():
                self._connecting = None
        return self._protocol

    async def execute(self, *args):
        """Send one command (pipelined with others in this tick) and return its reply."""
        protocol = await self._connection()
        return await protocol.send(hiredis.pack_command(args))

    @property
    def connected(self) -> bool:
        return self._protocol is not None and not self._protocol.closed

    async def close(self) -> None:
        if self._protocol is not None:
            self._protocol.close()
