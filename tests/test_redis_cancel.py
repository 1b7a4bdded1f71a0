"""A task cancelled during a Redis call is cancelled (redis.asyncio can swallow the cancellation)."""

from __future__ import annotations

import asyncio

import pytest

from enhanced_llm.cache.redis_store import RedisGuard, make_redis_client

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_a_cancelled_redis_call_is_never_swallowed(redis_available):
    assert redis_available
    client, guard = make_redis_client(), RedisGuard(timeout=1.0, retry_after=1.0)
    swallowed = 0
    try:
        await client.set("enhanced-llm-test-cancel", b"1")
        for i in range(600):
            task = asyncio.create_task(guard.call(client.get("enhanced-llm-test-cancel")))
            for _ in range(i % 7):  # cancel at every stage of the command
                await asyncio.sleep(0)
            requested = task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                continue
            swallowed += requested
    finally:
        await client.delete("enhanced-llm-test-cancel")
        await client.aclose()
    assert swallowed == 0
    assert guard.errors == 0  # a cancellation is not a Redis failure
