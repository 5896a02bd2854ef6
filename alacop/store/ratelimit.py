"""Per-address rate limits: in memory for one instance, in Redis when several share the load."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from redis.asyncio import Redis


class MemoryRateLimiter:
    """Fixed windows per key, bounded so a flood of distinct keys cannot exhaust memory."""

    def __init__(self, max_keys: int = 100_000, now: Callable[[], float] = time.monotonic) -> None:
        self._hits: OrderedDict[str, tuple[int, int]] = OrderedDict()
        self._max_keys = max_keys
        self._now = now

    async def hit(self, key: str, limit: int, window_seconds: int) -> bool:
        window = int(self._now() // window_seconds)
        seen_window, count = self._hits.get(key, (window, 0))
        count = count + 1 if seen_window == window else 1
        self._hits[key] = (window, count)
        self._hits.move_to_end(key)
        while len(self._hits) > self._max_keys:
            self._hits.popitem(last=False)
        return count <= limit

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        self._hits.clear()


class RedisRateLimiter:
    """INCR with an expiry per window: every instance behind the load balancer sees one count."""

    def __init__(self, url: str, prefix: str = "alacop:rl:", now: Callable[[], float] = time.time) -> None:
        self._redis: Redis = Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self._prefix = prefix
        self._now = now

    async def hit(self, key: str, limit: int, window_seconds: int) -> bool:
        window = int(self._now() // window_seconds)
        name = f"{self._prefix}{key}:{window}"
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.incr(name)
            pipe.expire(name, window_seconds * 2)
            count, _ = await pipe.execute()
        return int(count) <= limit

    async def ping(self) -> bool:
        try:
            return bool(await self._redis.ping())
        except Exception:
            return False

    async def close(self) -> None:
        await self._redis.aclose()
