"""Forgetting answers across replicas: two engines on one Redis (real engine, Redis, MiniLM, FAISS)."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import pytest_asyncio
from conftest import engine_args, unique_prefix
from helpers import run
from vllm import SamplingParams

from enhanced_llm import CacheConfig, CacheType, EnhancedAsyncLLM, HandlerConfig, SimilarityConfig
from enhanced_llm.cache.invalidation import Invalidations
from enhanced_llm.cache.redis_store import make_redis_client

pytestmark = pytest.mark.asyncio(loop_scope="module")

PREFIX = unique_prefix("forget")


def rid() -> str:
    return uuid.uuid4().hex


def greedy(scope: str | None = None) -> SamplingParams:
    extra = {"enhanced_llm": {"scope": scope}} if scope is not None else None
    return SamplingParams(temperature=0.0, max_tokens=96, extra_args=extra)


def _replica() -> EnhancedAsyncLLM:
    handler_config = HandlerConfig()
    handler_config.features.enable_similarity_search = True
    return EnhancedAsyncLLM.from_engine_args(
        engine_args(),
        cache_config=CacheConfig(cache_type=CacheType.MULTI, key_prefix=PREFIX),
        similarity_config=SimilarityConfig(embedding_model="sentence-transformers/all-MiniLM-L6-v2", lookup_timeout=0.5),
        handler_config=handler_config,
    )


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def replicas():
    a, b = _replica(), _replica()
    await asyncio.gather(a.start_enhancements(), b.start_enhancements())
    yield a, b
    await a.cleanup()
    await b.cleanup()


async def _eventually(check, seconds: float = 5.0):
    for _ in range(int(seconds / 0.05)):
        if await check():
            return True
        await asyncio.sleep(0.05)
    return False


async def _settle(*llms):
    for llm in llms:
        for _ in range(200):
            if not llm._background:
                break
            await asyncio.sleep(0.02)
        await llm.flush_cache_writes()


async def test_forget_removes_the_answer_on_every_replica(replicas):
    a, b = replicas
    question = f"How tall is the tower number {uuid.uuid4().hex[:6]}?"
    first = await run(a, question, greedy(), rid())
    await _settle(a)
    on_b = await run(b, question, greedy(), rid())
    assert on_b.metadata["cache_hit"] and on_b.token_ids == first.token_ids  # from Redis, now in B's memory too
    assert (await run(b, question, greedy(), rid())).metadata["cache_level"] == "memory"
    assert await a.forget(question, greedy()) is True
    again = greedy()
    again.extra_args = {"enhanced_llm": {"cache": "no-store"}}
    assert not (await run(a, question, again, rid())).metadata["cache_hit"]

    async def b_misses():
        probe = greedy()
        probe.extra_args = {"enhanced_llm": {"cache": "no-store"}}
        return not (await run(b, question, probe, rid())).metadata["cache_hit"]

    assert await _eventually(b_misses), "replica B still answers the forgotten question"
    assert await a.forget(f"never asked {uuid.uuid4().hex}", greedy()) is False


async def test_forget_removes_the_vector_so_paraphrases_miss_on_every_replica(replicas):
    a, b = replicas
    stored, paraphrase = "How do I convert Celsius to Fahrenheit?", "How can I convert Celsius into Fahrenheit?"
    scope = f"sem-{uuid.uuid4().hex[:6]}"
    no_store = greedy(scope)
    no_store.extra_args["enhanced_llm"]["cache"] = "no-store"
    await run(a, stored, greedy(scope), rid())
    await _settle(a)

    async def b_semantic_hit():
        return (await run(b, paraphrase, no_store, rid())).metadata["cache_source"] == "semantic"

    assert await _eventually(b_semantic_hit), "replica B never answered the paraphrase from the cache"
    assert await a.forget(stored, greedy(scope), scope=scope) is True

    async def b_refuses():
        return (await run(b, paraphrase, no_store, rid())).metadata["cache_source"] is None

    assert await _eventually(b_refuses), "replica B still answers the paraphrase of a forgotten question"


async def test_forget_scope_reaches_every_replica_and_only_that_scope(replicas):
    a, b = replicas
    question = f"What is the price of ticket {uuid.uuid4().hex[:6]}?"
    t1, t2 = f"t1-{uuid.uuid4().hex[:6]}", f"t2-{uuid.uuid4().hex[:6]}"
    await run(a, question, greedy(t1), rid())
    await run(a, question, greedy(t2), rid())
    await _settle(a)
    assert (await run(b, question, greedy(t1), rid())).metadata["cache_hit"]
    await a.forget_scope(t1)

    async def b_forgot_t1():
        probe = greedy(t1)
        probe.extra_args["enhanced_llm"]["cache"] = "no-store"
        return not (await run(b, question, probe, rid())).metadata["cache_hit"]

    assert await _eventually(b_forgot_t1, seconds=15.0), (b.invalidations.stats, b.invalidations.epoch(t1), a.invalidations.epoch(t1))
    assert (await run(b, question, greedy(t2), rid())).metadata["cache_hit"]  # the other tenant keeps its answers
    assert (await run(a, question, greedy(t2), rid())).metadata["cache_hit"]


async def test_a_replica_that_starts_later_knows_the_forgotten_scopes(redis_available):
    client = make_redis_client()
    prefix = unique_prefix("epochs")
    first, late = Invalidations(client, prefix), Invalidations(client, prefix)
    try:
        await first.start()
        await first.raise_epoch("tenant-x")
        await first.raise_epoch(None)
        await late.start()
        assert late.epoch("tenant-x") == first.epoch("tenant-x") == (1, 1)
        assert late.epoch("tenant-y") == (1, 0)
    finally:
        await first.close()
        await late.close()
        async for key in client.scan_iter(match=f"{{{prefix}:*"):
            await client.delete(key)
        await client.aclose()


async def test_a_running_replica_follows_the_stream_within_its_socket_timeout(redis_available):
    """The stream is read with a blocking XREAD: it must return before the client's socket timeout
    (the Redis call timeout), or every read fails and a running replica never hears of a removal."""
    prefix = unique_prefix("follow")
    a = Invalidations(make_redis_client(timeout=0.25), prefix, timeout=0.25)
    b = Invalidations(make_redis_client(timeout=0.25), prefix, timeout=0.25)
    client = make_redis_client()
    try:
        await a.start()
        await b.start()
        await asyncio.sleep(2.0)  # several read cycles
        await a.raise_epoch("tenant-z")
        assert await _eventually(lambda: _async_true(b.epoch("tenant-z") == (0, 1)), seconds=3.0)
        assert b.stats["errors"] == 0 and b.stats["applied_from_replicas"] == 1
    finally:
        await a.close()
        await b.close()
        async for key in client.scan_iter(match=f"{{{prefix}:*"):
            await client.delete(key)
        await client.aclose()


async def _async_true(value: bool) -> bool:
    return value
