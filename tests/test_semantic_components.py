"""Semantic layer with the real MiniLM, real FAISS and the real Redis at 127.0.0.1:6379 (db 15)."""

from __future__ import annotations

import asyncio
import os
import uuid

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytest.importorskip("faiss")
pytest.importorskip("sentence_transformers")

from enhanced_llm.config import SimilarityConfig  # noqa: E402
from enhanced_llm.semantic import Embedder, SemanticCache, VectorIndex, Verifier  # noqa: E402

REDIS_URL = "redis://127.0.0.1:6379/15"


@pytest.fixture(scope="module")
def model():
    return Embedder().load()


def make_cache(model, **kw) -> SemanticCache:
    cfg = SimilarityConfig(similarity_threshold=kw.pop("threshold", 0.8), lookup_timeout=5.0)
    return SemanticCache(cfg, embedder=Embedder(model=model), **kw)


async def redis_or_skip():
    import redis.asyncio as aioredis

    r = aioredis.Redis.from_url(REDIS_URL)
    try:
        await r.ping()
    except Exception:
        pytest.skip("no Redis at 127.0.0.1:6379")
    return r


# -- verifier ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "a, b, reason",
    [
        ("How do I convert Celsius to Fahrenheit?", "How do I convert Fahrenheit to Celsius?", "swapped_roles"),
        ("Cheap flights from Paris to Rome", "Cheap flights from Rome to Paris", "swapped_roles"),
        ("What is the capital of France?", "What is the capital of Germany?", "entity_mismatch"),
        ("Give me 3 tips for sleep", "Give me five tips for sleep", "number_mismatch"),
        ("Can dogs eat chocolate?", "Can dogs not eat chocolate?", "negation_mismatch"),
        ("How can I increase my metabolism?", "How can I decrease my metabolism?", "antonym"),
        ("北京的天气怎么样", "上海的天气怎么样", "entity_mismatch"),
        ("如何增加内存", "如何减少内存", "antonym"),
        ("我喜欢猫", "我不喜欢猫", "negation_mismatch"),
        ("从北京到上海怎么走", "从上海到北京怎么走", "swapped_roles"),
        ("买三个苹果", "买五个苹果", "number_mismatch"),
    ],
)
def test_verifier_rejects_near_misses(a, b, reason):
    v = Verifier()
    verdict = v.verify(b, a)
    assert not verdict.accepted and verdict.reason == reason, verdict


def test_verifier_unrepresentable_and_paraphrase(model):
    v = Verifier(text_info=Embedder(model=model).text_info)
    assert v.verify("今天天气如何", "今天天气怎么样").reason == "unrepresentable"
    assert v.verify("How can I reset my password?", "How do I reset my password?").accepted
    assert v.verify("What are three ways to save money?", "What are 3 ways to save money?").accepted


def test_verifier_uses_nlp_results():
    class R:
        entities = [{"text": "Acme", "label": "ORG", "start": 0, "end": 4}]
        numbers: list[str] = []
        negations: list[str] = []

    class S:
        entities = [{"text": "Globex", "label": "ORG", "start": 0, "end": 6}]
        numbers: list[str] = []
        negations: list[str] = []

    assert Verifier().verify("who founded the company", "who founded the company?", R(), S()).reason == "entity_mismatch"


# -- index ---------------------------------------------------------------------------


def _unit(n, d=16, seed=0):
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_index_scopes_eviction_and_removal():
    evicted: list[str] = []
    ix = VectorIndex(16, max_entries=10, approximate_after=6, on_evict=evicted.extend)
    x = _unit(14)
    for i in range(14):
        ix.add("a" if i % 2 else "b", f"e{i}", f"q{i}", x[i])
    assert evicted == ["e0", "e1", "e2", "e3"] and len(ix) == 10
    assert all(c.scope == "a" for c in ix.search("a", x[13], 5))
    assert ix.search("b", x[13], 1)[0].entry_id != "e13"
    assert ix.search("a", x[13], 1)[0].entry_id == "e13"
    assert ix.remove("e13") and "e13" not in ix
    assert all(c.entry_id != "e13" for c in ix.search("a", x[13], 10))
    assert set(ix.entry_ids()) == {f"e{i}" for i in range(4, 13)}
    assert ix.memory_bytes() > 0
    ix.add("a", "e5", "q5 again", x[5])  # replacing keeps one entry per id
    assert len(ix) == 9 and ix.get("e5") == ("a", "q5 again")


# -- facade --------------------------------------------------------------------------


async def test_lookup_paraphrase_scope_and_rejection(model):
    sc = make_cache(model)
    await sc.start()
    await sc.add("m1", "How do I reset my password?", "k1")
    await sc.add("m1", "How do I convert Celsius to Fahrenheit?", "k2")
    m = await sc.lookup("m1", "How can I reset my password?")
    assert m is not None and m.entry_id == "k1" and m.similarity >= 0.8
    assert await sc.lookup("m2", "How can I reset my password?") is None  # other scope
    assert await sc.lookup("m1", "How do I convert Fahrenheit to Celsius?") is None
    assert sc.stats()["rejections"].get("swapped_roles") == 1
    res = await sc.search("reset password", k=5)
    assert res and res[0]["entry_id"] == "k1" and set(res[0]) == {"question", "similarity", "entry_id"}
    assert len(await sc.batch_search(["a", "b"])) == 2
    await sc.close()


async def test_threshold_edges(model):
    sc = make_cache(model, threshold=1.0)
    await sc.start()
    await sc.add("s", "How do I reset my password?", "k1")
    assert await sc.lookup("s", "How can I reset my password?") is None
    assert (await sc.lookup("s", "How do I reset my password?")).entry_id == "k1"
    sc.config.similarity_threshold = 0.0
    assert (await sc.lookup("s", "How can I reset my password?")).entry_id == "k1"
    await sc.close()


async def test_embedding_failure_fails_open(model, monkeypatch):
    sc = make_cache(model)
    await sc.start()
    await sc.add("s", "How do I reset my password?", "k1")

    def boom(*a, **k):
        raise RuntimeError("model crashed")

    monkeypatch.setattr(model, "encode", boom)
    assert await sc.lookup("s", "a question never embedded before") is None
    assert not await sc.add("s", "another new question", "k2")
    st = sc.stats()
    assert st["embedder"]["failures"] >= 1 and sum(st["errors"].values()) >= 2
    await sc.close()


async def test_concurrent_embeds_are_batched(model):
    emb = Embedder(model=model, batch_window_ms=5, max_batch_size=64)
    vecs = await asyncio.gather(*(emb.embed(f"question number {i} about batching") for i in range(64)))
    assert len(vecs) == 64 and vecs[0].shape == (384,) and vecs[0].dtype == np.float32
    assert emb.batches <= 3, emb.stats()
    assert abs(float(np.linalg.norm(vecs[3])) - 1) < 1e-4
    emb.close()


# -- Redis -----------------------------------------------------------------------------


async def test_hydration_and_sync_between_instances(model):
    r = await redis_or_skip()
    prefix = f"test:sem:{uuid.uuid4().hex}:"
    a = make_cache(model, redis=r, key_prefix=prefix, sync_interval_ms=100)
    await a.start()
    assert await a.add("s", "How do I reset my password?", "k1")
    b = make_cache(model, redis=r, key_prefix=prefix, sync_interval_ms=100)
    await b.start()  # hydrates k1
    assert (await b.lookup("s", "How can I reset my password?")).entry_id == "k1"
    await a.add("s", "What is the capital of France?", "k2")  # b follows the stream
    for _ in range(50):
        if "k2" in b.index:
            break
        await asyncio.sleep(0.05)
    assert "k2" in b.index
    await a.remove("k2")
    for _ in range(50):
        if "k2" not in b.index:
            break
        await asyncio.sleep(0.05)
    assert "k2" not in b.index
    await a.store.clear()
    await a.close()
    await b.close()
    await r.aclose()


async def test_redis_down_keeps_working_in_process(model):
    sc = make_cache(model, redis="redis://127.0.0.1:1/0", redis_timeout=0.2)
    await sc.start()
    assert await sc.add("s", "How do I reset my password?", "k1")
    assert (await sc.lookup("s", "How can I reset my password?")).entry_id == "k1"
    st = sc.stats()
    assert st["redis"]["errors"] >= 1
    assert sc.health()["redis"] == "down"
    await sc.close()
