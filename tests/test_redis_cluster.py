"""The exact cache, forgetting (the invalidation stream) and an outage on a real 3-master Redis Cluster.

A session fixture starts three ``redis-server --cluster-enabled yes`` on free ports, joins them with
``redis-cli --cluster create`` and shuts them down at the end. Requests go through the real engine
(the session's ``enhanced_llm`` with its exact cache swapped for one on the cluster).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid

import pytest
import pytest_asyncio
from conftest import unique_prefix
from helpers import run
from vllm import SamplingParams

from enhanced_llm import CacheConfig, CacheType, TieredCache
from enhanced_llm.cache.invalidation import Invalidations
from enhanced_llm.cache.redis_client import make_redis_client

pytestmark = pytest.mark.asyncio(loop_scope="session")


def _free_port() -> int:
    """A free port whose cluster bus port (port + 10000) is valid and free too."""
    while True:
        with socket.socket() as s, socket.socket() as bus:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
            if port + 10000 > 65535:
                continue
            try:
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
            return port


class Cluster:
    """Three masters (no replicas) in a temporary directory."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="enhanced-llm-cluster-")
        self.ports = [_free_port() for _ in range(3)]
        self.server, self.cli = shutil.which("redis-server"), shutil.which("redis-cli")

    @property
    def nodes(self) -> list[str]:
        return [f"127.0.0.1:{p}" for p in self.ports]

    def start_node(self, port: int) -> None:
        subprocess.run(
            [self.server, "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
             "--cluster-config-file", f"nodes-{port}.conf", "--cluster-node-timeout", "1000",
             "--cluster-require-full-coverage", "no", "--dir", self.dir, "--save", "", "--appendonly", "no",
             "--daemonize", "yes", "--pidfile", os.path.join(self.dir, f"{port}.pid"),
             "--logfile", os.path.join(self.dir, f"{port}.log")],
            check=True, timeout=10,
        )
        self._wait(lambda: self._cli(port, "ping") == "PONG", f"node {port} did not start")

    def kill_node(self, port: int) -> None:
        with open(os.path.join(self.dir, f"{port}.pid")) as f:
            pid = int(f.read())
        os.kill(pid, signal.SIGKILL)
        self._wait(lambda: self._cli(port, "ping") != "PONG", f"node {port} did not stop")

    def start(self) -> None:
        for port in self.ports:
            self.start_node(port)
        subprocess.run([self.cli, "--cluster", "create", *self.nodes, "--cluster-replicas", "0", "--cluster-yes"],
                       check=True, timeout=30, stdout=subprocess.DEVNULL)
        self.wait_ok()

    def wait_ok(self, seconds: float = 20.0) -> None:
        self._wait(lambda: all("cluster_state:ok" in self._cli(p, "cluster", "info") for p in self.ports),
                   "cluster did not become ok", seconds)

    def stop(self) -> None:
        for port in self.ports:
            try:
                self.kill_node(port)
            except (OSError, ValueError, RuntimeError):
                pass
        shutil.rmtree(self.dir, ignore_errors=True)

    def slots_of(self, port: int) -> list[tuple[int, int]]:
        """The slot ranges the master on ``port`` serves."""
        import redis

        client = redis.Redis(port=port)
        try:
            return [(int(r[0]), int(r[1])) for r in client.execute_command("CLUSTER", "SLOTS") if int(r[2][1]) == port]
        finally:
            client.close()

    def _cli(self, port: int, *args: str) -> str:
        try:
            return subprocess.run([self.cli, "-p", str(port), *args], capture_output=True, text=True, timeout=5).stdout.strip()
        except subprocess.TimeoutExpired:
            return ""

    @staticmethod
    def _wait(check, message: str, seconds: float = 10.0) -> None:
        deadline = time.time() + seconds
        while time.time() < deadline:
            if check():
                return
            time.sleep(0.05)
        raise RuntimeError(message)


@pytest.fixture(scope="session")
def redis_cluster():
    cluster = Cluster()
    if cluster.server is None or cluster.cli is None:
        pytest.skip("redis-server / redis-cli not found")
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def rid() -> str:
    return uuid.uuid4().hex


def greedy(max_tokens: int = 8) -> SamplingParams:
    return SamplingParams(temperature=0.0, max_tokens=max_tokens)


def prompt_of(label: str) -> str:
    return f"{label} {uuid.uuid4().hex[:10]} tell me about clusters"


def cluster_config(cluster: Cluster, **kw) -> CacheConfig:
    values = dict(cache_type=CacheType.MULTI, key_prefix=unique_prefix("cluster"), redis_cluster_nodes=cluster.nodes)
    values.update(kw)
    return CacheConfig(**values)


@pytest_asyncio.fixture(loop_scope="session")
async def cluster_engine(enhanced_llm, redis_cluster):
    """The session engine with its exact cache on the cluster (restored afterwards)."""
    original = enhanced_llm.cache_manager
    # generous timeouts: these tests are about routing and failure handling, not this machine's latency
    cache = TieredCache(cluster_config(redis_cluster, redis_timeout=1.0, redis_retry_after=0.3))
    assert await cache.redis.ping()  # the client has read the cluster's layout
    enhanced_llm.cache_manager = cache
    try:
        yield enhanced_llm
    finally:
        await cache.close()
        enhanced_llm.cache_manager = original


def _keys_of(llm, prompts: list[str]) -> dict[str, str]:
    cache = llm.cache_manager
    by_prompt = {e.prompt: k for k, (e, _) in cache.memory._data.items()}
    return {p: by_prompt[p] for p in prompts}


# -- the client --------------------------------------------------------------------------------


async def test_a_cluster_url_and_nodes_give_redis_pys_cluster_client(redis_cluster):
    from redis.asyncio.cluster import RedisCluster

    url = "redis+cluster://" + ",".join(redis_cluster.nodes)
    assert CacheConfig(cache_type=CacheType.REDIS, redis_url=url).uses_cluster
    for client in (make_redis_client(url=url), make_redis_client(cluster_nodes=redis_cluster.nodes[:1])):
        try:
            assert isinstance(client, RedisCluster)
            await client.set("{enhanced-llm-test}:probe", b"1", px=5000)
            assert await client.get("{enhanced-llm-test}:probe") == b"1"
            assert len(client.get_primaries()) == 3  # found from one startup node
        finally:
            await client.aclose()


# -- the exact cache through the engine ----------------------------------------------------------


async def test_exact_hits_from_the_cluster_through_the_engine(cluster_engine, redis_cluster):
    llm, cache = cluster_engine, cluster_engine.cache_manager
    prompts = [prompt_of(f"c{i}") for i in range(12)]
    first = await asyncio.gather(*[run(llm, p, greedy(), rid()) for p in prompts])
    await llm.flush_cache_writes()
    keys = _keys_of(llm, prompts)
    nodes = {cache.redis.client.get_node_from_key(cache.redis.entry_key(k)).port for k in keys.values()}
    assert len(nodes) >= 2  # the entries really are spread over masters
    cache.clear_memory()
    second = await asyncio.gather(*[run(llm, p, greedy(), rid()) for p in prompts])
    assert all(r.metadata["cache_level"] == "redis" for r in second), cache.snapshot()
    assert [r.answer() for r in second] == [r.answer() for r in first]
    # a planted bad value on the cluster is a counted miss and deleted
    victim = keys[prompts[0]]
    await cache.redis.client.set(cache.redis.entry_key(victim), b"not ours")
    cache.clear_memory()
    before = cache.stats.corrupt_entries
    res = await run(llm, prompts[0], greedy(), rid())
    assert res.finished and not res.metadata["cache_hit"] and cache.stats.corrupt_entries == before + 1
    assert cache.stats.redis_errors == 0


async def test_forget_on_the_cluster_reaches_the_other_replica(cluster_engine, redis_cluster):
    """Two invalidation followers on the cluster (hash-tagged stream and epochs): a forgotten key and a
    forgotten scope reach the other one; the entry itself is deleted from the cluster."""
    llm, cache = cluster_engine, cluster_engine.cache_manager
    prefix = cache.config.key_prefix
    dropped: list[str] = []
    a = Invalidations(cache.redis.client, prefix, timeout=0.5, block_ms=100)
    client_b = make_redis_client(cluster_nodes=redis_cluster.nodes, timeout=0.5)
    b = Invalidations(client_b, prefix, timeout=0.5, block_ms=100, on_key=dropped.append)
    try:
        await a.start()
        await b.start()
        # both followers are reading the stream (a cold start under load may have cost a retry)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and b.epoch("warm-up")[1] == 0:
            await a.raise_epoch("warm-up")
            await asyncio.sleep(0.3)
        assert b.epoch("warm-up")[1] > 0, b.stats
        prompt = prompt_of("forget")
        await run(llm, prompt, greedy(), rid())
        await llm.flush_cache_writes()
        key = _keys_of(llm, [prompt])[prompt]
        await cache.delete(key)
        await a.announce_key(key)
        epoch = await a.raise_epoch("tenant-x")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not (dropped and b.epoch("tenant-x")[1] == epoch):
            await asyncio.sleep(0.05)
        assert dropped == [key] and b.epoch("tenant-x") == (0, epoch), (a.stats, b.stats)
        assert await cache.redis.client.get(cache.redis.entry_key(key)) is None
        cache.clear_memory()
        assert not (await run(llm, prompt, greedy(), rid())).metadata["cache_hit"]
    finally:
        await a.close()
        await b.close()
        await client_b.aclose()


async def test_a_master_killed_mid_load_loses_no_request_and_the_cache_recovers(cluster_engine, redis_cluster):
    llm, cache = cluster_engine, cluster_engine.cache_manager
    victim = redis_cluster.ports[1]

    async def load(label: str, n: int):
        return await asyncio.gather(*[run(llm, prompt_of(f"{label}{i}"), greedy(), rid()) for i in range(n)])

    try:
        warm = asyncio.create_task(load("before", 40))
        await asyncio.sleep(0.2)
        redis_cluster.kill_node(victim)  # mid-load
        during = await load("down", 40)
        results = [*await warm, *during]
        await llm.flush_cache_writes()
        assert len(results) == 80 and all(r.finished for r in results)  # fail open: nothing lost
        assert cache.stats.redis_errors > 0  # counted
    finally:
        redis_cluster.start_node(victim)
    redis_cluster.wait_ok()
    # recovery: new answers are stored on every master again, the restarted one included
    await asyncio.sleep(cache.config.redis_retry_after)
    victim_slots = redis_cluster.slots_of(victim)
    deadline = time.monotonic() + 15
    recovered = False
    while time.monotonic() < deadline and not recovered:
        prompts = [prompt_of(f"after{i}") for i in range(6)]
        await asyncio.gather(*[run(llm, p, greedy(), rid()) for p in prompts])
        await llm.flush_cache_writes()
        keys = _keys_of(llm, prompts)
        cache.clear_memory()
        again = await asyncio.gather(*[run(llm, p, greedy(), rid()) for p in prompts])
        on_victim = [any(lo <= cache.redis.client.keyslot(cache.redis.entry_key(keys[p])) <= hi for lo, hi in victim_slots)
                     for p in prompts]
        recovered = all(r.metadata["cache_level"] == "redis" for r in again) and any(on_victim)
        if not recovered:
            await asyncio.sleep(0.5)
    assert recovered, "L2 hits on the restarted master did not come back"
