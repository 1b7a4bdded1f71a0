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


# -- 2. values from Redis validated and signed ------------------------------------------------------


def _unit(dim: int, seed: int, scale: float = 1.0) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    return scale * v / np.linalg.norm(v)


async def test_planted_values_and_records_are_counted_and_never_served(model):
    import msgspec

    from enhanced_llm.semantic.records import EntryCodec

    r = await shared_redis()
    prefix = f"{unique_prefix('semsign')}:"
    key = "signing-key-1"
    a = make_cache(model, redis=r, key_prefix=prefix, sync_interval_ms=100, config={"signing_key": key})
    await a.start()
    assert await a.add("s", "How do I reset my password?", "good")
    ns, dim = a.store.ns, a.index.dim
    enc = msgspec.msgpack.Encoder()
    vec = (await a.embedder.embed("How do I renew my passport?")).astype(np.float32)
    body = enc.encode(("s", "How do I renew my passport?", vec.tobytes(), 1.0))
    good_raw = await r.get(f"{ns}e:good")
    wrong_key = EntryCodec(ns, dim=dim, signing_key="another-key").pack("wrongkey", "s", "How do I renew my passport?", vec)
    planted = {
        "corrupt": b"\x94\xff\x00garbage",
        "foreign": enc.encode({"scope": "s", "q": "How do I renew my passport?"}),
        "oversized": b"\x01" + b"x" * (70 << 10),
        "unsigned": body,
        "wrongkey": wrong_key,
        "moved": good_raw,  # a valid signed value copied under another entry id
    }
    for name, raw in planted.items():
        await r.set(f"{ns}e:{name}", raw)
    await r.rpush(f"{ns}e:alist", b"x")  # another type under the prefix
    b = make_cache(model, redis=r, key_prefix=prefix, sync_interval_ms=100, config={"signing_key": key})
    await b.start()
    assert set(b.index.entry_ids()) == {"good"}
    rejected = b.store.stats()["rejected"]
    # With a key, nothing unsigned is even parsed: the corrupt and the foreign value count as unsigned.
    assert rejected == {"unsigned": 3, "malformed": 1, "oversized": 1, "bad_signature": 2}, rejected
    assert await b.lookup("s", "How can I renew my passport?") is None
    assert (await b.lookup("s", "How can I reset my password?")).entry_id == "good"

    # The change stream: unsigned additions, unsigned or forged removals, unknown ops.
    stream = a.store.stream_key
    await r.xadd(stream, {"op": "add", "id": "s1", "origin": "x", "data": body})
    await r.xadd(stream, {"op": "del", "id": "good", "origin": "x"})
    await r.xadd(stream, {"op": "del", "id": "good", "origin": "x", "sig": b"0" * 32})
    await r.xadd(stream, {"op": "rename", "id": "good", "origin": "x"})
    await r.xadd(stream, {"op": "add", "origin": "x", "data": good_raw})
    assert await a.add("s", "What is the capital of France?", "good2")  # a real one after them
    assert await wait_for(lambda: "good2" in b.index)
    assert set(b.index.entry_ids()) == {"good", "good2"}
    rejected = b.store.stats()["rejected"]
    assert rejected["unsigned"] == 5 and rejected["bad_signature"] == 3 and rejected["bad_record"] == 2, rejected
    # A signed removal from a replica with the key goes through.
    assert await a.remove("good2")
    assert await wait_for(lambda: "good2" not in b.index)
    await a.store.clear()
    await a.close()
    await b.close()
    await r.aclose()


async def test_without_a_key_values_are_still_checked(model):
    import msgspec

    r = await shared_redis()
    prefix = f"{unique_prefix('semcheck')}:"
    a = make_cache(model, redis=r, key_prefix=prefix)
    await a.start()
    assert await a.add("s", "How do I reset my password?", "good")
    ns, dim = a.store.ns, a.index.dim
    enc = msgspec.msgpack.Encoder()
    planted = {
        "huge_norm": ("s", "Tell me a joke", _unit(dim, 1, scale=100.0).tobytes(), 1.0),  # would outscore everything
        "nan": ("s", "Tell me a joke", np.full(dim, np.nan, np.float32).tobytes(), 1.0),
        "short": ("s", "Tell me a joke", _unit(dim // 2, 2).tobytes(), 1.0),
        "empty_q": ("s", "", _unit(dim, 3).tobytes(), 1.0),
        "wrong_types": (1, "Tell me a joke", _unit(dim, 4).tobytes(), 1.0),
    }
    for name, value in planted.items():
        await r.set(f"{ns}e:{name}", enc.encode(value))
    await r.set(f"{ns}e:{'x' * 600}", enc.encode(("s", "Tell me a joke", _unit(dim, 5).tobytes(), 1.0)))  # id too long
    b = make_cache(model, redis=r, key_prefix=prefix)
    await b.start()
    assert set(b.index.entry_ids()) == {"good"}
    assert b.store.stats()["rejected"] == {"bad_vector": 3, "malformed": 2, "bad_id": 1}, b.store.stats()
    assert await b.lookup("s", "Tell me a joke") is None
    await a.store.clear()
    await a.close()
    await b.close()
    await r.aclose()


def test_engine_copies_the_exact_cache_signing_key():
    from enhanced_llm.engine.construction import EnhancementsMixin

    class Probe(EnhancementsMixin):
        pass

    probe = Probe.__new__(Probe)
    probe.cache_config = type("C", (), {"signing_key": "shared-key", "redis_url": None})()
    probe.similarity_config = SimilarityConfig()
    probe.cache_manager = None
    probe._semantic_redis = None
    probe.cache_config.key_prefix, probe.cache_config.redis_timeout, probe.cache_config.ttl = "p", 0.25, None
    helper = probe._build_similarity_helper()
    assert helper.config.signing_key == "shared-key"
    own = SimilarityConfig(signing_key="own-key")
    probe.similarity_config = own
    assert probe._build_similarity_helper().config.signing_key == "own-key"


# -- 3. a stream read that times out resumes ------------------------------------------------------


async def _pause(server, seconds: float) -> None:
    import signal

    os.kill(server.proc.pid, signal.SIGSTOP)
    try:
        await asyncio.sleep(seconds)
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)


async def _private_pair(model, server, **kw):
    url = f"redis://127.0.0.1:{server.port}/0"
    a = make_cache(model, redis=url, redis_timeout=0.2, sync_interval_ms=100, **kw)
    b = make_cache(model, redis=url, redis_timeout=0.2, sync_interval_ms=100, **kw)
    await a.start()
    assert await a.add("s", "How do I reset my password?", "k1")
    await b.start()
    assert "k1" in b.index and b.store.hydrations == 1
    return a, b


async def test_a_timed_out_stream_read_resumes_without_rehydrating(model, private_redis):
    a, b = await _private_pair(model, private_redis)
    errors = b.store.errors
    # The XREAD (100 ms block + 0.2 s timeout) times out during the pause; each follower then backs
    # off for 1 s and asks XINFO, after Redis is back. (A pause of 1.5 s made that XINFO time out at
    # the moment Redis resumed, reopening A's circuit just as the test wrote: the write was skipped.)
    await _pause(private_redis, 0.6)
    assert b.store.errors > errors, b.store.stats()
    assert await wait_for(lambda: a.store.available and b.store.available, 5)
    writes = a.store.writes
    assert await a.add("s", "What is the capital of France?", "k2")
    assert a.store.writes == writes + 1, a.store.stats()  # written, not skipped while down
    assert await wait_for(lambda: "k2" in b.index, 10), b.store.stats()
    assert b.store.hydrations == 1 and b.store.gap_resyncs == 0, b.store.stats()  # resumed, not re-scanned
    await a.close()
    await b.close()


async def test_records_trimmed_while_unreachable_make_it_rehydrate(model, private_redis):
    import redis.asyncio as aioredis

    a, b = await _private_pair(model, private_redis)
    b.store.retry_after = b.store._guard.retry_after = 4.0  # room to write and trim before it reads again
    errors = b.store.errors
    await _pause(private_redis, 1.0)
    assert b.store.errors > errors
    await asyncio.sleep(0.5)
    raw = aioredis.Redis(port=private_redis.port)
    assert await wait_for(lambda: a.store.available, 5)
    writes = a.store.writes
    for i in range(3):
        assert await a.add("s", f"Question number {i} about trimmed streams?", f"t{i}")
    assert a.store.writes == writes + 3, a.store.stats()  # written, not skipped while down
    await raw.xtrim(a.store.stream_key, maxlen=0, approximate=False)  # the records b has not read are gone
    assert await wait_for(lambda: all(f"t{i}" in b.index for i in range(3)), 15), b.store.stats()
    assert b.store.hydrations == 2 and b.store.gap_resyncs == 1, b.store.stats()
    await raw.aclose()
    await a.close()
    await b.close()


async def test_writes_that_failed_while_redis_was_paused_reach_the_other_replica_after_it(model, private_redis):
    a, b = await _private_pair(model, private_redis)
    assert await a.add("s", "How tall is Mount Everest?", "gone")
    assert await wait_for(lambda: "gone" in b.index, 10)
    pause = asyncio.create_task(_pause(private_redis, 1.0))
    await asyncio.sleep(0.1)
    assert await a.add("s", "What is the capital of France?", "late")  # indexed here; its write times out
    assert await a.add("s", "Who wrote Hamlet?", "superseded")
    assert await a.remove("superseded")  # the kept add is replaced by the removal
    assert await a.remove("gone")
    assert a.store.unsent == 3 and "superseded" not in a.index, a.store.stats()
    await pause
    assert await wait_for(lambda: "late" in b.index and "gone" not in b.index, 10), b.store.stats()
    assert await wait_for(lambda: a.store.unsent == 0, 5) and a.store.resent == 3, a.store.stats()
    await asyncio.sleep(0.5)  # the removal of an entry b never had changes nothing there
    assert "superseded" not in b.index
    import redis.asyncio as aioredis

    raw = aioredis.Redis(port=private_redis.port)
    assert not await raw.exists(f"{a.store.ns}e:superseded") and await raw.exists(f"{a.store.ns}e:late")
    await raw.aclose()
    await a.close()
    await b.close()


async def test_the_writes_kept_for_a_resend_are_bounded_in_bytes():
    from enhanced_llm.semantic.store import SemanticStore

    store = SemanticStore("redis://127.0.0.1:1/0", "test:sem:unsent:", timeout=0.2, dim=8, max_unsent_bytes=8 << 10)
    vector = np.ones(8, dtype=np.float32) / np.sqrt(8)
    try:
        for i in range(20):  # Redis is unreachable: every write fails or is skipped, and is kept
            assert not await store.put(f"e{i}", "s", f"question {i} " + "x" * 1000, vector)
        stats = store.stats()
        assert 0 < stats["unsent_bytes"] <= 8 << 10 and stats["unsent"] + stats["unsent_dropped"] == 20, stats
        assert store.unsent < 20 and f"e19" in store._unsent and "e0" not in store._unsent  # the oldest went first
        assert await store.resend() == 0 and store.unsent == stats["unsent"]  # still down: kept
    finally:
        await store.close()


async def test_a_failure_of_its_own_while_following_is_counted_and_following_goes_on(model, private_redis):
    a, b = await _private_pair(model, private_redis)
    space = b.spaces[0]
    real_apply, calls = space.apply, []

    def apply_failing_once(entries):
        calls.append(len(entries))
        if len(calls) == 1:
            raise RuntimeError("index broke")
        return real_apply(entries)

    space.apply = apply_failing_once
    assert await a.add("s", "What is the capital of France?", "k2")
    assert await wait_for(lambda: b.errors["follow"] == 1, 10), b.errors  # counted: not a Redis fault
    assert await a.add("s", "How tall is Mount Everest?", "k3")
    assert await wait_for(lambda: "k3" in b.index, 10), b.store.stats()
    assert b.store.errors == 0 and b.store.hydrations == 1, b.store.stats()
    await a.close()
    await b.close()


# -- 4. Redis Cluster ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory):
    """A local 3-master Redis Cluster on free ports (torn down after the module)."""
    import shutil
    import socket
    import subprocess
    import time

    server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if server is None or cli is None:
        pytest.skip("redis-server / redis-cli not found")
    import random

    def free(port: int) -> bool:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
        return True

    ports: list[int] = []  # each node also listens on port + 10000 (cluster bus): stay below 55536
    while len(ports) < 3:
        p = random.randint(20000, 45000)
        if p not in ports and free(p) and free(p + 10000):
            ports.append(p)
    workdir = tmp_path_factory.mktemp("cluster")
    procs = [
        subprocess.Popen(
            [server, "--port", str(p), "--bind", "127.0.0.1", "--cluster-enabled", "yes", "--cluster-config-file",
             f"nodes-{p}.conf", "--dir", str(workdir), "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        for p in ports
    ]
    try:
        for p in ports:
            deadline = time.time() + 10
            while True:
                try:
                    socket.create_connection(("127.0.0.1", p), timeout=0.2).close()
                    break
                except OSError:
                    if time.time() > deadline:
                        raise
                    time.sleep(0.05)
        subprocess.run(
            [cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports), "--cluster-replicas", "0", "--cluster-yes"],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60,
        )
        deadline = time.time() + 30
        while b"cluster_state:ok" not in subprocess.run([cli, "-p", str(ports[0]), "cluster", "info"], capture_output=True).stdout:
            if time.time() > deadline:
                raise RuntimeError("cluster did not become ok")
            time.sleep(0.2)
        yield ports
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(timeout=10)


async def test_store_hydrate_follow_and_refuse_on_a_redis_cluster(model, redis_cluster):
    from redis.asyncio.cluster import RedisCluster

    ra = RedisCluster(host="127.0.0.1", port=redis_cluster[0])
    rb = RedisCluster(host="127.0.0.1", port=redis_cluster[1])
    prefix = f"{unique_prefix('semcluster')}:"
    key = "cluster-key"
    a = make_cache(model, redis=ra, key_prefix=prefix, sync_interval_ms=100, config={"signing_key": key})
    await a.start()
    questions = [f"How do I configure feature number {i} of the billing dashboard?" for i in range(40)]
    for i, q in enumerate(questions):
        assert await a.add("s", q, f"c{i}")
    assert await a.add("s", "How do I reset my password?", "pw")
    # The entries are spread over the masters (no hash tag), so hydration must scan each of them.
    per_node = {}
    for node in ra.get_primaries():
        keys = [k async for k in node_scan(ra, node, f"{a.store.ns}e:*")]
        per_node[node.name] = len(keys)
    assert sum(per_node.values()) == 41 and sum(1 for n in per_node.values() if n) >= 2, per_node
    await ra.set(f"{a.store.ns}e:planted", b"\x94garbage")  # unsigned: refused on every node it lands on
    b = make_cache(model, redis=rb, key_prefix=prefix, sync_interval_ms=100, config={"signing_key": key})
    await b.start()
    assert len(b.index) == 41 and b.store.stats()["rejected"] == {"unsigned": 1}, b.store.stats()
    assert (await b.lookup("s", "How can I reset my password?")).entry_id == "pw"
    assert await a.add("s", "What is the capital of France?", "fr")  # followed through the stream
    assert await wait_for(lambda: "fr" in b.index)
    assert await a.remove("pw")
    assert await wait_for(lambda: "pw" not in b.index)
    assert b.store.errors == 0 and a.store.errors == 0
    assert await a.store.clear() == 42 + 1  # 41 entries + planted - pw + fr, and the stream
    await a.close()
    await b.close()
    await ra.aclose()
    await rb.aclose()


async def node_scan(client, node, match):
    cursor = 0
    while True:
        cursors, keys = await client.scan(cursor=cursor, match=match, count=500, target_nodes=node)
        cursor = next(iter(cursors.values())) if isinstance(cursors, dict) else cursors
        for k in keys:
            yield k
        if int(cursor) == 0:
            return


# -- 5. memory bounded in bytes ---------------------------------------------------------------------


def _recount(index) -> int:
    """What the index should report, counted from scratch (checks the running count)."""
    from enhanced_llm.semantic.bounds import _entry_cost

    with index._lock:
        faiss_side = sum(index._scope_bytes(sc) + sc.name_bytes for sc in index._scopes.values())
        return faiss_side + sum(_entry_cost(e.entry_id, e.question) for e in index._entries.values())


def test_index_byte_and_scope_bounds_hold_and_their_count_stays_exact():
    from enhanced_llm.semantic import VectorIndex

    dim, bound = 384, 2 << 20
    evicted: list[str] = []
    ix = VectorIndex(dim, max_bytes=bound, max_scopes=400, approximate_after=150, background_rebuild=False,
                     on_evict=evicted.extend)
    vecs = np.stack([_unit(dim, i) for i in range(1500)])
    ix.add_many("big", [(f"b{i}", f"Big scope question {i}?") for i in range(300)], vecs[:300])  # goes IVF
    for s in range(1000):
        ix.search("big", vecs[0], 4)  # the big scope is in use: never the one dropped
        ix.add(f"tenant-{s}", f"t{s}", f"Question of tenant {s} about their invoices?", vecs[300 + s])
        assert ix.memory_bytes() <= bound
    st = ix.stats()
    assert st["scopes"] <= 400 and st["scope_drops"] > 0 and "big" in ix._scopes, st
    assert ix.memory_bytes() == _recount(ix)
    assert "t0" not in ix and "t999" in ix and "t0" in evicted
    for i in range(0, 300, 2):  # removals and compaction keep the count exact too
        ix.remove(f"b{i}")
    assert ix.memory_bytes() == _recount(ix)
    # The byte bound alone (no scope bound): many entries in few scopes, tombstones compacted at once.
    iy = VectorIndex(dim, max_bytes=1 << 20)
    for i in range(1500):
        iy.add(f"s{i % 3}", f"e{i}", f"A question numbered {i} for the byte bound?", vecs[i])
    assert iy.memory_bytes() <= 1 << 20 and iy.stats()["tombstones"] == 0, iy.stats()
    assert 0.8 * (1 << 20) <= iy.memory_bytes() and iy.memory_bytes() == _recount(iy)


def test_resident_memory_of_ten_thousand_tenants_stays_within_the_bound():
    """10,000 scopes x 3 entries under a 4 MiB bound, in a fresh process: RSS growth vs the bound."""
    import multiprocessing as mp
    import sys
    from pathlib import Path

    benchmarks = str(Path(__file__).resolve().parents[1] / "benchmarks")
    if benchmarks not in sys.path:
        sys.path.insert(0, benchmarks)  # the spawned child gets the same path
    import bench_semantic_memory as bench
    bound = 4 << 20
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=bench.index_case, args=(10_000, 3, bound, None, q))
    p.start()
    row = q.get(timeout=600)
    p.join()
    assert row["estimate"] <= bound and row["scopes_added"] == 10_000
    assert row["rss"] <= 1.10 * bound, row  # the target: within 10 % of the configured bound
    assert row["rss"] >= 0.5 * bound, row  # it did fill up to the bound (the measure is not empty)


async def test_a_dropped_scope_stays_in_redis_and_returns_at_the_next_hydration(model):
    r = await shared_redis()
    prefix = f"{unique_prefix('semscopes')}:"
    a = make_cache(model, redis=r, key_prefix=prefix, config={"index_max_scopes": 2})
    await a.start()
    assert await a.add("s1", "How do I reset my password?", "p1")
    assert await a.add("s2", "What is the capital of France?", "p2")
    assert await a.add("s3", "How do I bake sourdough bread?", "p3")
    assert "p1" not in a.index and a.index.stats()["scope_drops"] == 1
    assert await a.lookup("s1", "How can I reset my password?") is None  # gone from this process only
    assert await r.exists(f"{a.store.ns}e:p1")
    b = make_cache(model, redis=r, key_prefix=prefix, config={"index_max_scopes": 10})  # a replica starting later
    await b.start()
    assert (await b.lookup("s1", "How can I reset my password?")).entry_id == "p1"
    assert await a.add("s1", "What is a good name for a cat?", "p4")  # a new addition starts the scope again
    assert "p4" in a.index and "p2" not in a.index  # ... and drops the least recently used one
    await a.store.clear()
    await a.close()
    await b.close()
    await r.aclose()


async def test_a_prompt_longer_than_the_model_reads_is_not_embedded_indexed_or_written(model):
    r = await shared_redis()
    prefix = f"{unique_prefix('semlong')}:"
    sc = make_cache(model, redis=r, key_prefix=prefix)
    await sc.start()
    long_text = "Please summarise this report about quarterly revenue figures. " * 80  # ~800 tokens > 256
    assert not sc.embedder.fits(long_text)
    encoded = sc.embedder.encoded_texts
    assert not await sc.add("s", long_text, "long")
    assert await sc.lookup("s", long_text) is None
    assert sc.embedder.encoded_texts == encoded  # never embedded
    assert "long" not in sc.index and not await r.exists(f"{sc.store.ns}e:long") and sc.store.writes == 0
    assert sc.stats()["refused_long"] == 2
    await sc.close()
    await r.aclose()


def test_verifier_caches_are_bounded_in_bytes():
    import tracemalloc

    from enhanced_llm.semantic.verifier import analysis, en, evidence, memo, zh_rules

    before = analysis.cache_usage()["verifier_cache_bytes_bound"]
    analysis.set_cache_bytes(1 << 20)
    try:
        usage = analysis.cache_usage()
        assert usage["verifier_cache_bytes_bound"] == 1 << 20 and usage["word_cache_bytes_bound"] == 256 << 10
        for i in range(400):
            analysis.analyze(f"Question {i}: " + "how should I water the tomatoes in my garden " * 10)
        usage = analysis.cache_usage()
        assert 0 < usage["analysis_cache_bytes"] <= 768 << 10, usage
        # The word caches: what they count is what memory holds (tracemalloc), within their bound.
        en._stem("warming"), evidence._lexical("warm", "up"), zh_rules.split_word("员工工资")  # dictionaries load once
        memo.clear()
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            for i in range(3000):  # distinct words, made here: every byte the caches hold is traced
                w = f"w{i:06d}{'ab' * (i % 9)}"
                en._stem(w + "ing")
                evidence._lexical("a" + w, "b" + w)
                zh_rules.split_word(f"员工{i}")
            held = tracemalloc.get_traced_memory()[0] - base
        finally:
            tracemalloc.stop()
        usage = memo.usage()
        assert usage["word_cache_entries"] < 9000 and usage["word_cache_bytes"] <= 256 << 10, usage  # some were dropped
        assert 0.7 <= held / usage["word_cache_bytes"] <= 1.15, (held, usage)  # never much less than it holds
        memo.clear()
        en._stem("x" * 5000 + "ing")  # a long word is stemmed, not held
        evidence._lexical("y" * 5000, "z" * 5000)
        assert memo.usage()["word_cache_entries"] == 0
        en._stem("copies")
        assert memo.usage()["word_cache_entries"] == 1
    finally:
        analysis.set_cache_bytes(before)
