"""Semantic store hardening: scope re-checks, values from Redis validated and signed, stream reads that
resume, cluster-safe hydration, memory bounds. Real MiniLM, real FAISS, real Redis (the shared server
under unique prefixes, private servers for outages and the cluster), the real engine for the scope check."""

from __future__ import annotations

import asyncio
import os
import uuid

import numpy as np
import pytest
import pytest_asyncio

os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytest.importorskip("faiss")
pytest.importorskip("sentence_transformers")

from conftest import REDIS_HOST, REDIS_PORT, engine_args, unique_prefix  # noqa: E402
from helpers import run  # noqa: E402

from enhanced_llm.config import SimilarityConfig  # noqa: E402
from enhanced_llm.semantic import Embedder, SemanticCache  # noqa: E402

pytestmark = pytest.mark.asyncio(loop_scope="module")


def rid() -> str:
    return uuid.uuid4().hex


@pytest.fixture(scope="module")
def model():
    return Embedder().load()


def make_cache(model, **kw) -> SemanticCache:
    cfg = SimilarityConfig(similarity_threshold=kw.pop("threshold", 0.8), lookup_timeout=5.0, **kw.pop("config", {}))
    return SemanticCache(cfg, embedder=Embedder(model=model), **kw)


async def shared_redis():
    import redis.asyncio as aioredis

    r = aioredis.Redis(host=REDIS_HOST, port=REDIS_PORT)
    try:
        await r.ping()
    except Exception:
        pytest.fail("tests need Redis at 127.0.0.1:6379")
    return r


async def wait_for(predicate, timeout: float = 10.0) -> bool:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


# -- 1. scope re-check ---------------------------------------------------------------------------


async def test_index_entry_filed_under_another_scope_is_never_a_candidate(model):
    sc = make_cache(model)
    await sc.start()
    await sc.add("tenant-a", "How do I reset my password?", "ka")
    await sc.add("tenant-b", "What is the capital of France?", "kb")
    assert (await sc.lookup("tenant-a", "How can I reset my password?")).entry_id == "ka"
    # Corrupt the index: tenant-a's vector now sits in tenant-b's FAISS index (same id, same vector).
    index = sc.index
    with index._lock:
        i = index._by_entry_id["ka"]
        vec = index._scopes["tenant-a"].index.reconstruct(i)
        index._scopes["tenant-b"].index.add_with_ids(vec.reshape(1, -1), np.array([i], dtype=np.int64))
        index._scopes["tenant-b"].live += 1
    assert await sc.lookup("tenant-b", "How can I reset my password?") is None
    assert index.scope_mismatches >= 1
    assert (await sc.lookup("tenant-a", "How can I reset my password?")).entry_id == "ka"  # its own scope still hits
    await sc.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def semantic_llm():
    from enhanced_llm import CacheConfig, CacheType, EnhancedAsyncLLM, HandlerConfig

    handler_config = HandlerConfig()
    handler_config.features.enable_similarity_search = True
    llm = EnhancedAsyncLLM.from_engine_args(
        engine_args(),
        cache_config=CacheConfig(cache_type=CacheType.MULTI, key_prefix=unique_prefix("semhard")),
        similarity_config=SimilarityConfig(similarity_threshold=0.8, lookup_timeout=0.5),
        handler_config=handler_config,
    )
    await llm.start_enhancements()
    yield llm
    await llm.cleanup()


async def _settle(llm):
    deadline = asyncio.get_running_loop().time() + 10
    while llm._background and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)
    await llm.flush_cache_writes()


def _scoped(scope: str, **kw):
    from vllm import SamplingParams

    extra = {"enhanced_llm": {"scope": scope, "cache": "no-store"}} if kw.pop("no_store", False) else {"enhanced_llm": {"scope": scope}}
    return SamplingParams(temperature=0.0, max_tokens=128, extra_args=extra, **kw)


async def test_planted_index_entry_pointing_at_another_tenants_answer_is_not_served(semantic_llm):
    llm = semantic_llm
    helper = llm.similarity_helper
    secret_q, own_q = "What is the secret launch date of project falcon?", "How do I bake sourdough bread?"
    secret = await run(llm, secret_q, _scoped("alpha"), rid())
    await run(llm, own_q, _scoped("beta"), rid())
    await _settle(llm)
    index = helper.index
    by_question = {index.get(e)[1]: (e, index.get(e)[0]) for e in index.entry_ids()}
    secret_id, alpha_scope = by_question[secret_q]
    _, beta_scope = by_question[own_q]
    assert alpha_scope != beta_scope
    # Plant: beta's index now holds alpha's question, pointing at alpha's cached answer.
    vec = await helper.embedder.embed(secret_q)
    index.add(beta_scope, secret_id, secret_q, vec)
    before = llm.get_cache_stats().get("semantic_scope_mismatch", 0)
    res = await run(llm, "What's the secret launch date of project falcon?", _scoped("beta", no_store=True), rid())
    meta = res.metadata
    assert meta["cache_source"] != "semantic" and not meta["cache_hit"], meta
    assert meta["verification"]["reason"] == "scope_mismatch", meta
    assert llm.get_cache_stats().get("semantic_scope_mismatch", 0) == before + 1
    # alpha's own paraphrase would have hit had it been in alpha's scope: put it back, and it does.
    index.add(alpha_scope, secret_id, secret_q, vec)
    for _ in range(3):
        own = await run(llm, "What's the secret launch date of project falcon?", _scoped("alpha", no_store=True), rid())
        if own.metadata["cache_source"] == "semantic":
            break
    assert own.metadata["cache_source"] == "semantic", own.metadata
    assert own.texts == secret.texts
