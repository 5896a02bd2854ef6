"""Rate limiters: in memory, and in Redis shared by several instances."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator

import pytest

from alacop.store.ratelimit import MemoryRateLimiter, RedisRateLimiter
from tests.conftest import unavailable

pytestmark = pytest.mark.storage
REDIS_URL = os.environ.get("ALACOP_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


class FakeTime:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def redis_limiters() -> AsyncIterator[tuple[RedisRateLimiter, RedisRateLimiter, FakeTime]]:
    clock = FakeTime()
    prefix = f"alacop-test:{uuid.uuid4().hex}:"
    a = RedisRateLimiter(REDIS_URL, prefix=prefix, now=clock)
    b = RedisRateLimiter(REDIS_URL, prefix=prefix, now=clock)
    try:
        await a.ping()
    except Exception as exc:
        await a.close()
        await b.close()
        unavailable(f"Redis unreachable at {REDIS_URL}: {exc.__class__.__name__}")
    yield a, b, clock
    await a.close()
    await b.close()


async def test_memory_limiter_counts_per_key_and_window() -> None:
    clock = FakeTime()
    limiter = MemoryRateLimiter(now=clock)
    assert [await limiter.hit("ip:1", 3, 60) for _ in range(4)] == [True, True, True, False]
    assert await limiter.hit("ip:2", 3, 60) is True
    clock.now += 60
    assert await limiter.hit("ip:1", 3, 60) is True


async def test_memory_limiter_is_bounded() -> None:
    limiter = MemoryRateLimiter(max_keys=100)
    for i in range(1000):
        await limiter.hit(f"ip:{i}", 5, 60)
    assert len(limiter._hits) == 100


async def test_redis_limiter_is_shared_across_instances(
    redis_limiters: tuple[RedisRateLimiter, RedisRateLimiter, FakeTime],
) -> None:
    a, b, clock = redis_limiters
    results = [
        await a.hit("ip:1", 4, 60),
        await b.hit("ip:1", 4, 60),
        await a.hit("ip:1", 4, 60),
        await b.hit("ip:1", 4, 60),
        await a.hit("ip:1", 4, 60),
    ]
    assert results == [True, True, True, True, False]
    assert await b.hit("ip:2", 4, 60) is True
    clock.now += 60
    assert await a.hit("ip:1", 4, 60) is True


async def test_redis_keys_expire(redis_limiters: tuple[RedisRateLimiter, RedisRateLimiter, FakeTime]) -> None:
    a, _, clock = redis_limiters
    await a.hit("ip:9", 4, 60)
    window = int(clock.now // 60)
    ttl = await a._redis.ttl(f"{a._prefix}ip:9:{window}")
    assert 0 < ttl <= 120
