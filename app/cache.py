"""Redis: the per-client rate limit and the response cache, shared by every replica.

Both keep their truth in Redis and a working copy in the process, so a cached read or a
rate-limit check costs no round trip:

- Rate limit: fixed one-minute windows (wall clock, so every replica agrees on them).
  Each process counts its own requests and, every SYNC_INTERVAL_SECONDS, adds them to the
  client's shared counter with one pipelined script call per active client, learning the
  total across replicas. A client is refused once the shared total plus its local,
  not-yet-synced requests passes the limit. A burst that starts on several replicas at
  once can overshoot by at most one limit per replica before the first sync.
- Cache: responses are stored under a generation number, in Redis (shared by replicas,
  short TTL) and in a small per-process map. Every write INCRs the generation and
  PUBLISHes it in one script; each process subscribes, so its local entries go stale
  the moment any replica writes. A response built from a read that raced a write lands
  under a generation nobody reads.

While Redis is unreachable (or the subscription is down) caching is bypassed and the
rate limit fails open; both show in /health/ready and /metrics. The local map is cleared
on every resubscribe, since a restarted Redis may count generations from zero again. A
bump that could not be sent is sent once Redis answers again. If an invalidation is lost
anyway, the TTL bounds staleness: a local copy fetched from Redis can outlive the Redis
entry by one TTL, so the bound is 2 x CACHE_TTL_SECONDS.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from dataclasses import dataclass

from app import metrics
from app.redis_pipeline import PipelinedRedis, RedisReplyError, RedisUnavailable

GENERATION_KEY = "alerts:gen"
RATE_WINDOW_SECONDS = 60
SYNC_INTERVAL_SECONDS = 0.05
HEALTH_CHECK_SECONDS = 1.0
LOCAL_ENTRIES_MAX = 2048
REDIS_ERRORS = (RedisUnavailable, RedisReplyError, OSError, TimeoutError)
log = logging.getLogger("app.cache")


class _Script:
    """A Lua script called by SHA, loaded on the first NOSCRIPT (new or restarted server)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    async def __call__(self, client: PipelinedRedis, *keys_and_args):
        try:
            return await client.execute("EVALSHA", self.sha, *keys_and_args)
        except RedisReplyError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
            return await client.execute("EVAL", self.source, *keys_and_args)


# KEYS[1] a client's counter for one window. ARGV[1] requests to add, ARGV[2] TTL.
_COUNT = _Script("""
local total = redis.call('INCRBY', KEYS[1], ARGV[1])
if total == tonumber(ARGV[1]) then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return total
""")
# KEYS[1] the generation: bump it and tell every subscribed replica.
_BUMP = _Script("""
local gen = redis.call('INCR', KEYS[1])
redis.call('PUBLISH', KEYS[1], gen)
return gen
""")


@dataclass(slots=True)
class Gate:
    """What the rate limit and the cache decided for one request."""

    allowed: bool = True
    retry_after: int = 0
    generation: str | None = None  # None: caching is bypassed for this request
    cached: bytes | None = None


class Cache:
    def __init__(self, url: str, *, rate_limit: int, ttl_seconds: int) -> None:
        self._client = PipelinedRedis(url, connect_timeout=0.5, reply_timeout=0.5)
        self._subscriber = PipelinedRedis(
            url, connect_timeout=0.5, reply_timeout=2.0,
            on_message=self._on_generation, on_close=self._on_subscription_lost,
        )
        self.rate_limit = rate_limit
        self.ttl_seconds = ttl_seconds
        self.connected = False
        self._generation: int | None = None  # None until subscribed
        self._announced: int | None = None  # last generation seen on the subscription
        self._bump_owed = False
        self._local: dict[str, tuple[int, float, bytes]] = {}
        self._pending: dict[tuple[str, int], int] = {}  # (client, window) -> unsynced
        self._shared: dict[tuple[str, int], int] = {}  # (client, window) -> synced total
        self._invalidation: asyncio.Future | None = None
        self._building: dict[tuple[str, str], asyncio.Future] = {}
        self._task: asyncio.Task | None = None

    # -- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._subscriber.close()
        await self._client.close()

    async def _run(self) -> None:
        """Keep the subscription up and push local rate-limit counts to Redis."""
        next_check = 0.0
        while True:
            try:
                now = time.monotonic()
                if now >= next_check:
                    next_check = now + HEALTH_CHECK_SECONDS
                    await self._check()
                if self._pending:
                    await self._sync_counts()
            except (ValueError, TypeError):
                # A foreign value under our keys (say, a non-integer generation) must not
                # end this loop: that would leave caching off for the life of the process.
                log.exception("unexpected value in Redis; retrying")
                self._generation = None
            await asyncio.sleep(SYNC_INTERVAL_SECONDS)

    async def _check(self) -> None:
        """Subscribe when not subscribed; otherwise PING both connections. A silently dead
        subscription would miss invalidations, so it must fail loudly here instead."""
        if self._generation is None:
            await self._subscribe()
        else:
            try:
                await asyncio.gather(self._subscriber.execute("PING"),
                                     self._client.execute("PING"))
            except REDIS_ERRORS as exc:
                await self._subscriber.close()
                self._generation = None
                self._mark(False, exc)
                return
            self._mark(True)
        if self._bump_owed and self.connected:
            self._bump_owed = False
            await self.invalidate()

    async def _subscribe(self) -> bool:
        self._announced = None
        try:
            await self._subscriber.execute("SUBSCRIBE", GENERATION_KEY)
            # Read the generation once subscribed. The reply comes on the other connection
            # and may be older than a message already received, hence the max().
            current = await self._client.execute("GET", GENERATION_KEY)
        except REDIS_ERRORS as exc:
            await self._subscriber.close()
            self._mark(False, exc)
            return False
        self._local.clear()
        self._generation = max(int(current or 0), self._announced or 0)
        self._mark(True)
        return True

    def _on_generation(self, channel: bytes, value: bytes) -> None:
        try:
            generation = int(value)
        except ValueError:
            log.warning("ignored a non-integer cache generation announcement")
            return
        previous, self._announced = self._announced, generation
        if self._generation is None:
            return  # subscribing: _subscribe takes the highest announced value
        if previous is not None and generation < previous:
            # Announcements arrive in publish order, so going down means Redis lost its
            # data (a FLUSHALL or a restart without persistence): forget every local copy.
            self._local.clear()
            self._generation = generation
            return
        # A bump's own reply (on the other connection) may already have moved us ahead.
        self._generation = max(self._generation, generation)

    def _on_subscription_lost(self) -> None:
        self._generation = None
        self._mark(False)

    def _mark(self, ok: bool, exc: BaseException | None = None) -> None:
        if ok != self.connected:
            metrics.redis_connected.set(1 if ok else 0)
            if ok:
                log.info("redis connected")
            else:
                log.warning("redis unreachable (%s); caching bypassed, rate limit open",
                            type(exc).__name__ if exc else "connection lost")
        self.connected = ok

    async def ping(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(self._client.execute("PING"), timeout)
        except REDIS_ERRORS as exc:
            self._mark(False, exc)
            raise
        if self._generation is None:
            raise RedisUnavailable("not subscribed to cache invalidations yet")

    # -- rate limit -----------------------------------------------------------------

    def _admit(self, client_id: str) -> Gate | None:
        """None when the request may proceed; a refusing Gate otherwise."""
        if not self.rate_limit:
            return None
        if not self.connected:
            metrics.rate_limit_fail_open_total.inc()
            return None
        now = time.time()
        window = int(now // RATE_WINDOW_SECONDS)
        key = (client_id, window)
        pending = self._pending.get(key, 0) + 1
        self._pending[key] = pending
        if self._shared.get(key, 0) + pending > self.rate_limit:
            metrics.rate_limit_rejections_total.inc()
            retry_after = RATE_WINDOW_SECONDS - int(now % RATE_WINDOW_SECONDS)
            return Gate(allowed=False, retry_after=max(retry_after, 1))
        return None

    async def _sync_counts(self) -> None:
        pending, self._pending = self._pending, {}
        window_now = int(time.time() // RATE_WINDOW_SECONDS)
        self._shared = {k: v for k, v in self._shared.items() if k[1] >= window_now}
        keys = list(pending)
        calls = [
            _COUNT(self._client, 1, f"rl:{client}:{window}", count, RATE_WINDOW_SECONDS * 2)
            for (client, window), count in pending.items()
        ]
        results = await asyncio.gather(*calls, return_exceptions=True)
        for key, result in zip(keys, results, strict=True):
            if isinstance(result, BaseException):
                self._mark(False, result)
                continue
            if key[1] >= window_now:
                # Requests admitted since the sync began stay pending on top of this total.
                self._shared[key] = int(result)

    # -- cache ----------------------------------------------------------------------

    async def gate(self, client_id: str, cache_key: str = "") -> Gate:
        """Apply the rate limit and, given a cache key, look the response up."""
        refused = self._admit(client_id)
        if refused is not None:
            return refused
        if not cache_key:
            return Gate()
        generation = self._generation
        if generation is None or not self.connected:
            metrics.cache_lookups_total.labels("bypass").inc()
            return Gate()
        entry = self._local.get(cache_key)
        if entry is not None and entry[0] == generation and entry[1] > time.monotonic():
            metrics.cache_lookups_total.labels("hit").inc()
            return Gate(generation=str(generation), cached=entry[2])
        try:
            body = await self._client.execute("GET", f"alerts:cache:{generation}:{cache_key}")
        except REDIS_ERRORS as exc:
            self._mark(False, exc)
            metrics.cache_lookups_total.labels("bypass").inc()
            return Gate()
        if body is not None:
            self._remember(generation, cache_key, body)
        metrics.cache_lookups_total.labels("hit" if body is not None else "miss").inc()
        return Gate(generation=str(generation), cached=body)

    def _remember(self, generation: int, cache_key: str, body: bytes) -> None:
        if len(self._local) >= LOCAL_ENTRIES_MAX:
            self._local.pop(next(iter(self._local)))  # oldest insertion first
        self._local[cache_key] = (generation, time.monotonic() + self.ttl_seconds, body)

    async def fill(self, gate: Gate, cache_key: str, build) -> bytes:
        """Build a missed response once per process, however many requests missed it.

        When a popular entry expires, every request in flight would otherwise run the same
        query at once (a stampede that queues on the pool and shows as p99 spikes); here
        the first builds and stores it and the rest await that result.
        """
        if gate.generation is None:
            return await build()
        flight = (gate.generation, cache_key)
        pending = self._building.get(flight)
        if pending is None:
            pending = asyncio.ensure_future(self._build_and_store(gate.generation, cache_key,
                                                                  build))
            self._building[flight] = pending
            pending.add_done_callback(lambda _: self._building.pop(flight, None))
        return await asyncio.shield(pending)

    async def _build_and_store(self, generation: str, cache_key: str, build) -> bytes:
        body = await build()
        await self.store(generation, cache_key, body)
        return body

    async def store(self, generation: str, cache_key: str, body: bytes) -> None:
        gen = int(generation)
        if self._generation is None or gen != self._generation:
            return  # a write happened while this response was built: don't keep it
        self._remember(gen, cache_key, body)
        try:
            await self._client.execute(
                "SET", f"alerts:cache:{gen}:{cache_key}", body, "EX", self.ttl_seconds
            )
        except REDIS_ERRORS as exc:
            self._mark(False, exc)

    async def invalidate(self) -> None:
        """Bump the generation so every cached response, on every replica, is stale.

        Writes that finish in the same event-loop tick share one bump: it is sent after
        all of them have committed, which is all that correctness needs.
        """
        pending = self._invalidation
        if pending is None:
            pending = self._invalidation = asyncio.ensure_future(
                _BUMP(self._client, 1, GENERATION_KEY)
            )
            asyncio.get_running_loop().call_soon(self._seal_invalidation, pending)
        try:
            generation = int(await asyncio.shield(pending))
        except REDIS_ERRORS as exc:
            # Other replicas may still serve what this write changed: send the bump as
            # soon as Redis answers again (the health check does), and drop local copies.
            self._mark(False, exc)
            self._local.clear()
            self._bump_owed = True
            return
        if self._generation is not None:
            # This replica reads its own writes at once, without waiting for the message.
            self._generation = max(self._generation, generation)

    def _seal_invalidation(self, pending: asyncio.Future) -> None:
        if self._invalidation is pending:
            self._invalidation = None
