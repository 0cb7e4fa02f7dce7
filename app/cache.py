"""Redis: the per-client rate limit and the list cache, in one round trip per request.

List responses are cached under a generation number; every write bumps the generation,
so a list built from a read that raced a write lands under a generation nobody reads.
While Redis is unreachable, calls are skipped for a short back-off: reads go to
PostgreSQL uncached and the rate limit fails open. Both show in /health/ready and /metrics.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import redis.asyncio as redis
from redis.exceptions import RedisError

from app import metrics

GENERATION_KEY = "alerts:gen"
RATE_WINDOW_SECONDS = 60
BACKOFF_SECONDS = 1.0

# KEYS[1] rate-limit counter, KEYS[2] list generation.
# ARGV[1] window seconds, ARGV[2] limit (0 = off), ARGV[3] cache key suffix ('' = no lookup).
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
return {count, ttl, gen, redis.call('GET', 'alerts:list:' .. gen .. ':' .. ARGV[3])}
"""


@dataclass(slots=True)
class Gate:
    """What one Redis round trip decided for a request."""

    allowed: bool = True
    retry_after: int = 0
    generation: str | None = None  # None: no cache lookup was made
    cached: bytes | None = None


class Cache:
    def __init__(self, url: str, *, rate_limit: int, ttl_seconds: int) -> None:
        self._client = redis.Redis.from_url(
            url,
            socket_connect_timeout=0.5,
            socket_timeout=0.5,
            retry_on_timeout=False,
            max_connections=64,
        )
        self._gate = self._client.register_script(_GATE_LUA)
        self.rate_limit = rate_limit
        self.ttl_seconds = ttl_seconds
        self._down_until = 0.0
        self.connected = False

    async def close(self) -> None:
        await self._client.aclose()

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
            await asyncio.wait_for(self._client.ping(), timeout)
        except (TimeoutError, RedisError, OSError):
            self._mark(False)
            raise
        self._mark(True)

    async def gate(self, client_id: str, list_key: str = "") -> Gate:
        """Count the request against the client's budget and, for lists, fetch the cache."""
        if self._skipping():
            return self._fail_open(list_key)
        try:
            count, ttl, gen, body = await self._gate(
                keys=(f"rl:{client_id}", GENERATION_KEY),
                args=(RATE_WINDOW_SECONDS, self.rate_limit, list_key),
            )
        except (TimeoutError, RedisError, OSError):
            self._mark(False)
            return self._fail_open(list_key)
        if not self.connected:
            self._mark(True)
        if self.rate_limit and count > self.rate_limit:
            metrics.rate_limit_rejections_total.inc()
            return Gate(allowed=False, retry_after=max(int(ttl), 1))
        if not list_key:
            return Gate()
        metrics.cache_lookups_total.labels("hit" if body else "miss").inc()
        return Gate(generation=gen.decode() if isinstance(gen, bytes) else str(gen), cached=body)

    def _fail_open(self, list_key: str) -> Gate:
        if self.rate_limit:
            metrics.rate_limit_fail_open_total.inc()
        if list_key:
            metrics.cache_lookups_total.labels("bypass").inc()
        return Gate()

    async def store_list(self, generation: str, list_key: str, body: bytes) -> None:
        if self._skipping():
            return
        try:
            await self._client.set(
                f"alerts:list:{generation}:{list_key}", body, ex=self.ttl_seconds
            )
        except (TimeoutError, RedisError, OSError):
            self._mark(False)

    async def invalidate_lists(self) -> None:
        """Bump the generation so every cached list is stale at once."""
        try:
            await self._client.incr(GENERATION_KEY)
        except (TimeoutError, RedisError, OSError):
            # With Redis down nothing can be served from it either; the list TTL bounds
            # staleness once it returns.
            self._mark(False)
