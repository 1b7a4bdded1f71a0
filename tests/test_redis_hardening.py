"""A Redis cache that cannot be exhausted or poisoned (real engine, real Redis, unique key prefixes).

* a burst of distinct requests waits for pooled connections instead of failing (no Redis errors,
  circuit closed); a wait that runs out is counted as busy, not as a failure;
* values planted in Redis (corrupt, foreign, unsigned, mis-signed, oversized, a zip bomb) are
  counted misses, deleted, never served, and the request still generates;
* signing round trip (config, environment variable, CLI option);
* the memory level's byte bound holds what memory really holds.
"""

from __future__ import annotations

import asyncio
import gc
import os
import random
import tracemalloc
import uuid

import pytest
from conftest import unique_prefix
from helpers import run
from vllm import SamplingParams

from enhanced_llm import CacheConfig, CacheType, TieredCache
from enhanced_llm.cache.entry import CachedCompletion, CacheEntry
from enhanced_llm.cache.envelope import Envelope
from enhanced_llm.cache.redis_client import make_redis_client

SIGNING_KEY = "test-signing-key"
BOMB_BYTES = 64 << 20


def rid() -> str:
    return uuid.uuid4().hex


def greedy(max_tokens: int = 8) -> SamplingParams:
    return SamplingParams(temperature=0.0, max_tokens=max_tokens)


def prompt_of(label: str) -> str:
    return f"{label} {uuid.uuid4().hex[:10]} tell me about caching"


def entry(key: str, i: int = 0, rng: random.Random | None = None) -> CacheEntry:
    rng = rng or random.Random(i)
    words = " ".join(rng.choice(["alpha", "beta", "gamma", "delta"]) for _ in range(rng.randint(20, 120)))
    return CacheEntry(
        key=key, scope="s", prompt=f"question {i}: {words}",
        prompt_token_ids=[rng.randint(0, 150_000) for _ in range(rng.randint(20, 200))],
        completions=[CachedCompletion(0, f"answer {i} {words}", [rng.randint(0, 150_000) for _ in range(rng.randint(50, 300))],
                                      None, "stop", None)],
    )


# -- the pool ----------------------------------------------------------------------------------


async def test_300_concurrent_distinct_requests_cost_no_redis_errors(enhanced_llm):
    # the default pool (64 connections), generous timeouts: this is about the pool's size (the old
    # non-blocking pool failed every call past the 64th at once), not about the machine's latency
    original = enhanced_llm.cache_manager
    cache = TieredCache(CacheConfig(cache_type=CacheType.MULTI, key_prefix=unique_prefix("burst"),
                                    redis_timeout=1.0, redis_pool_timeout=1.0))
    enhanced_llm.cache_manager = cache
    try:
        assert cache.redis.client.connection_pool.max_connections == cache.config.redis_max_connections < 300
        prompts = [prompt_of(f"burst{i}") for i in range(300)]
        results = await asyncio.gather(*[run(enhanced_llm, p, greedy(4), rid()) for p in prompts])
        await enhanced_llm.flush_cache_writes()
        stats = enhanced_llm.get_cache_stats()
        assert all(r.finished for r in results)
        assert stats["redis_errors"] == 0, "waiting for a pooled connection is not a Redis failure"
        assert cache.redis.available and stats["stores"] == 300
        assert stats["redis_busy"] < 30  # lookups and writes were not dropped
        cache.clear_memory()  # the answers reached Redis
        again = await asyncio.gather(*[run(enhanced_llm, p, greedy(4), rid()) for p in prompts[:20]])
        assert all(r.metadata["cache_level"] == "redis" for r in again)
    finally:
        await cache.close()
        enhanced_llm.cache_manager = original


async def test_a_wait_that_runs_out_is_busy_not_a_failure(redis_available):
    assert redis_available
    config = CacheConfig(cache_type=CacheType.REDIS, key_prefix=unique_prefix("busy"), redis_max_connections=1,
                         redis_pool_timeout=0.05, redis_timeout=0.2)
    cache = TieredCache(config)
    try:
        # the pool's only connection is taken (as a long command would hold it)
        pool = cache.redis.client.connection_pool
        held = await pool.get_connection()
        assert await cache.get("some-key") is None
        assert cache.stats.redis_busy == 1 and cache.stats.redis_errors == 0
        assert cache.redis.available  # the circuit stayed closed
        await pool.release(held)
        cache.put(entry("some-key"))
        await cache.flush()
        cache.clear_memory()
        assert await cache.get("some-key") is not None  # and Redis is used again at once
    finally:
        await cache.redis.client.delete(cache.redis.entry_key("some-key"))
        await cache.close()


async def test_300_concurrent_lookups_and_writes_on_a_small_pool(redis_available):
    assert redis_available
    # generous timeouts: this is about the pool's size (the old pool failed at once), not the machine's latency
    config = CacheConfig(cache_type=CacheType.MULTI, key_prefix=unique_prefix("pool"), redis_max_connections=8,
                         redis_timeout=1.0, redis_pool_timeout=1.0)
    cache = TieredCache(config)
    keys = [f"k{i}" for i in range(300)]
    try:
        assert await asyncio.gather(*[cache.get(k) for k in keys]) == [None] * 300
        for i, k in enumerate(keys):
            cache.put(entry(k, i))
        await cache.flush()
        cache.clear_memory()
        found = await asyncio.gather(*[cache.get(k) for k in keys])
        assert cache.stats.redis_errors == 0 and cache.redis.available
        assert sum(f is not None for f in found) + cache.stats.redis_busy >= 300
        assert sum(f is not None for f in found) >= 270
    finally:
        await cache.redis.client.delete(*[cache.redis.entry_key(k) for k in keys])
        await cache.close()


# -- planted values ------------------------------------------------------------------------------


def _signed_cache_config(prefix: str, **kw) -> CacheConfig:
    return CacheConfig(cache_type=CacheType.MULTI, key_prefix=prefix, signing_key=SIGNING_KEY,
                       max_value_bytes=256 << 10, **kw)


async def test_planted_values_are_counted_misses_deleted_and_the_request_generates(enhanced_llm):
    original = enhanced_llm.cache_manager
    cache = TieredCache(_signed_cache_config(unique_prefix("planted")))
    enhanced_llm.cache_manager = cache
    try:
        prompt = prompt_of("planted")
        first = await run(enhanced_llm, prompt, greedy(), rid())
        await enhanced_llm.flush_cache_writes()
        (key,) = [k for k, (e, _) in cache.memory._data.items() if e.prompt == prompt]
        redis_key = cache.redis.entry_key(key)
        genuine = await cache.redis.client.get(redis_key)
        assert genuine[4] & 0x80  # signed
        good = cache.memory.get(key)
        foreign = Envelope(signing_key=SIGNING_KEY.encode()).seal(key, b"\x00")  # valid MAC, not an entry
        other = cache.codec.encode(CacheEntry(key="someone-else", scope="x", prompt="p", prompt_token_ids=[1], completions=[]))
        unsigned = Envelope().seal(key, cache.codec._encoder.encode(good))
        other_key = Envelope(signing_key=b"another key").seal(key, cache.codec._encoder.encode(good))
        bomb = Envelope(signing_key=SIGNING_KEY.encode()).seal(key, b"\0" * BOMB_BYTES)  # signed by the key holder
        assert len(bomb) < 4096
        oversized = genuine[:5] + bytes(300 << 10)
        planted = {  # value -> the counter that must move besides corrupt_entries
            b"not ours": None, b"ELC\x01\x00\xff\xff": None, foreign: None, genuine[:-3]: "bad_signatures",
            other: "bad_signatures", unsigned: "bad_signatures", other_key: "bad_signatures",
            oversized: "oversized_entries", bomb: "oversized_entries",
        }
        for value, counter in planted.items():
            await cache.redis.client.set(redis_key, value)
            cache.clear_memory()
            before = dict(cache.stats.as_dict())
            res = await run(enhanced_llm, prompt, greedy(), rid())
            assert res.finished and not res.metadata["cache_hit"], value[:16]
            assert res.answer() == first.answer()  # generated again, same greedy answer
            after = cache.stats.as_dict()
            assert after["corrupt_entries"] == before["corrupt_entries"] + 1, value[:16]
            if counter is not None:
                assert after[counter] == before[counter] + 1, (counter, value[:16])
            await cache.flush()
            stored = await cache.redis.client.get(redis_key)
            assert stored != value  # deleted (and the fresh answer stored again)
        # the regenerated answer is a genuine L2 hit again
        await cache.flush()
        cache.clear_memory()
        res = await run(enhanced_llm, prompt, greedy(), rid())
        assert res.metadata["cache_level"] == "redis" and res.answer() == first.answer()
    finally:
        await cache.close()
        enhanced_llm.cache_manager = original


async def test_a_zip_bomb_lookup_allocates_little_and_long_values_are_not_fetched(redis_available):
    assert redis_available
    config = CacheConfig(cache_type=CacheType.REDIS, key_prefix=unique_prefix("bomb"), max_value_bytes=1 << 20)
    cache = TieredCache(config)
    redis_key = cache.redis.entry_key("k")
    try:
        bomb = Envelope().seal("k", b"\0" * BOMB_BYTES)
        big = bomb[:5] + bytes(6 << 20)  # 6 MiB on the wire, bound 1 MiB: only 1 MiB + 1 byte is read
        for value in (bomb, big):
            await cache.redis.client.set(redis_key, value)
            gc.collect()
            tracemalloc.start()
            try:
                assert await cache.get("k") is None
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
            assert peak < 4 << 20, f"lookup of a {len(value)}-byte value allocated {peak} bytes"
            await cache.flush()
            assert not await cache.redis.client.exists(redis_key)
        assert cache.stats.oversized_entries == 2 and cache.stats.redis_errors == 0
        # and answers over the bound are not written
        cache.put(CacheEntry(key="k", scope="s", prompt=os.urandom(3 << 20).hex(), prompt_token_ids=[1],
                             completions=[CachedCompletion(0, "y", [1], None, "stop", None)]))
        await cache.flush()
        assert not await cache.redis.client.exists(redis_key) and cache.stats.oversized_entries == 3
    finally:
        await cache.redis.client.delete(redis_key)
        await cache.close()


# -- signing -------------------------------------------------------------------------------------


async def test_signing_round_trip_and_a_cache_with_another_key_refuses(redis_available, monkeypatch):
    assert redis_available
    prefix = unique_prefix("sign")
    monkeypatch.setenv("ENHANCED_LLM_CACHE_SIGNING_KEY", SIGNING_KEY)
    from_env = CacheConfig(cache_type=CacheType.REDIS, key_prefix=prefix)
    assert from_env.signing_key is not None and SIGNING_KEY not in repr(from_env)
    writer = TieredCache(from_env)
    reader = TieredCache(CacheConfig(cache_type=CacheType.REDIS, key_prefix=prefix, signing_key=SIGNING_KEY))
    stranger = TieredCache(CacheConfig(cache_type=CacheType.REDIS, key_prefix=prefix, signing_key="other"))
    try:
        stored = entry("k1")
        writer.put(stored)
        await writer.flush()
        hit = await reader.get("k1")
        assert hit is not None and hit[0] == stored
        assert await stranger.get("k1") is None
        assert stranger.stats.bad_signatures == 1
        await stranger.flush()
        assert await reader.get("k1") is None  # the stranger deleted the value it could not verify
    finally:
        for cache in (writer, reader, stranger):
            await cache.redis.client.delete(cache.redis.entry_key("k1"))
            await cache.close()


def test_cli_signing_key_and_pool_size_options():
    from enhanced_llm.cli import build_parser, options_from_args

    args = build_parser().parse_args(["serve", "some/model", "--cache-type", "multi", "--cache-signing-key", "s3cret",
                                      "--redis-max-connections", "128"])
    config = options_from_args(args).cache_config
    assert config.signing_key.get_secret_value() == "s3cret" and config.redis_max_connections == 128


# -- the memory bound ----------------------------------------------------------------------------


@pytest.mark.parametrize("ttl", [None, 600.0])
def test_memory_byte_bound_counts_what_memory_holds(ttl):
    bound = 8 << 20
    cache = TieredCache(CacheConfig(cache_type=CacheType.MEMORY, memory_cache_size=10**6, memory_cache_bytes=bound, ttl=ttl))
    rng = random.Random(1)
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for i in range(2000):  # ~16 KiB each: about 4x the bound, so it is full and evicting
            cache.put(entry(f"key-{i}-{uuid.uuid4().hex}", i, rng))
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert cache.stats.evictions > 0
    assert 0.9 * bound <= held <= 1.1 * bound, f"held {held} bytes for a bound of {bound}"
    assert cache.memory.nbytes <= bound


def test_the_client_is_a_bounded_blocking_pool():
    import redis.asyncio as aioredis

    client = make_redis_client(max_connections=7, pool_timeout=0.3)
    assert isinstance(client.connection_pool, aioredis.BlockingConnectionPool)
    # the pool's own wait is a backstop (2 x timeout + pool wait); RedisGuard bounds a call first
    assert client.connection_pool.max_connections == 7 and client.connection_pool.timeout == pytest.approx(0.8)
