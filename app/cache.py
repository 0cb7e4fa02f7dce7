"""Redis: the per-client rate limit and the response cache, in one round trip per request.

Cached responses live under a generation number; every write bumps the generation, so a
response built from a read that raced a write lands under a generation nobody reads.
While Redis is unreachable, calls are skipped for a short back-off: reads go to
PostgreSQL uncached and the rate limit fails open. Both show in /health/ready and /metrics.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass

from app import metrics
from app.redis_pipeline import PipelinedRedis, RedisReplyError, RedisUnavailable

GENERATION_KEY = "alerts:gen"
RATE_WINDOW_SECONDS = 60
BACKOFF_SECONDS = 1.0

# KEYS[1] rate-limit counter, KEYS[2] cache generation.
# ARGV[1] window seconds, ARGV[2] limit (0 = off), ARGV[3] cache key ('' = no lookup).
_GATE_LUA = """
local count, ttl = 0, 0
if ARGV[2] ~= '0' then
  count = redis.call('INCR', KEYS[1])
  if count == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
  if count > tonumber(ARGV[2]) then
    ttl = redis.call('TTL', KEYS[1])
    return {count, ttl, '', false}
  end
end
if ARGV[3] == '' then return {count, ttl, '', false} end
local gen = redis.call('GET', KEYS[2]) or '0'
return {count, ttl, gen, redis.call('GET', 'alerts:cache:' .. gen .. ':' .. ARGV[3])}
"""
_GATE_SHA = hashlib.sha1(_GATE_LUA.encode()).hexdigest()
REDIS_ERRORS = (RedisUnavailable, RedisReplyError, OSError, TimeoutError)


@dataclass(slots=True)
class Gate:
    """What one Redis round trip decided for a request."""

    allowed: bool = True
    retry_after: int = 0
    generation: str | None = None  # None: no cache lookup was made
    cached: bytes | None = None


class Cache:
    def __init__(self, url: str, *, rate_limit: int, ttl_seconds: int) -> None:
        self._client = PipelinedRedis(url, connect_timeout=0.5, reply_timeout=0.5)
        self.rate_limit = rate_limit
        self.ttl_seconds = ttl_seconds
        self._down_until = 0.0
        self.connected = False
        self._invalidation: asyncio.Future | None = None

    async def close(self) -> None:
        await self._client.close()

    def _mark(self, ok: bool) -> None:
        if ok != self.connected:
            metrics.redis_connected.set(1 if ok else 0)
        self.connected = ok
        if not ok:
            self._down_until = time.monotonic() + BACKOFF_SECONDS

    def _skipping(self) -> bool:
        return time.monotonic() < self._down_until

    async def ping(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(self._client.execute("PING"), timeout)
        except REDIS_ERRORS:
            self._mark(False)
            raise
        self._mark(True)

    async def gate(self, client_id: str, cache_key: str = "") -> Gate:
        """Count the request against the client's budget and fetch its cached response."""
        if self._skipping():
            return self._fail_open(cache_key)
        keys_and_args = (2, f"rl:{client_id}", GENERATION_KEY,
                         RATE_WINDOW_SECONDS, self.rate_limit, cache_key)
        try:
            try:
                count, ttl, gen, body = await self._client.execute(
                    "EVALSHA", _GATE_SHA, *keys_and_args
                )
            except RedisReplyError as exc:
                if not str(exc).startswith("NOSCRIPT"):
                    raise
                # First call on this server (or after a restart): EVAL also caches it.
                count, ttl, gen, body = await self._client.execute(
                    "EVAL", _GATE_LUA, *keys_and_args
                )
        except REDIS_ERRORS:
            self._mark(False)
            return self._fail_open(cache_key)
        if not self.connected:
            self._mark(True)
        if self.rate_limit and count > self.rate_limit:
            metrics.rate_limit_rejections_total.inc()
            return Gate(allowed=False, retry_after=max(int(ttl), 1))
        if not cache_key:
            return Gate()
        metrics.cache_lookups_total.labels("hit" if body else "miss").inc()
        return Gate(generation=gen.decode(), cached=body)

    def _fail_open(self, cache_key: str) -> Gate:
        if self.rate_limit:
            metrics.rate_limit_fail_open_total.inc()
        if cache_key:
            metrics.cache_lookups_total.labels("bypass").inc()
        return Gate()

    async def store(self, generation: str, cache_key: str, body: bytes) -> None:
        if self._skipping():
            return
        try:
            await self._client.execute(
                "SET", f"alerts:cache:{generation}:{cache_key}", body, "EX", self.ttl_seconds
            )
        except REDIS_ERRORS:
            self._mark(False)

    async def invalidate(self) -> None:
        """Bump the generation so every cached response is stale at once.

        Writes that finish in the same event-loop tick share one INCR: it is sent after
        all of them have committed, which is all that correctness needs.
        """
        pending = self._invalidation
        if pending is None:
            pending = self._invalidation = asyncio.ensure_future(
                self._client.execute("INCR", GENERATION_KEY)
            )
            asyncio.get_running_loop().call_soon(self._seal_invalidation, pending)
        try:
            await asyncio.shield(pending)
        except REDIS_ERRORS:
            # With Redis down nothing can be served from it either; the list TTL bounds
            # staleness once it returns.
            self._mark(False)

    def _seal_invalidation(self, pending: asyncio.Future) -> None:
        if self._invalidation is pending:
            self._invalidation = None
