"""Redis hardening figures (issue 12, parts 3 and 4), printed with their targets.

* pool:   N concurrent distinct requests through EnhancedAsyncLLM (MULTI cache, the shared Redis,
          a unique key prefix): Redis errors counted (target 0), and waits that timed out (busy).
* bomb:   a ~2 KB zstd value planted under a request's Redis key that decompresses to 64 MiB:
          peak Python allocation during the lookup (tracemalloc; target < 4 MiB) and whether it is
          a counted miss.
* memory: the memory level filled with realistic entries: the bytes Python really holds
          (tracemalloc) against the configured byte bound (target within 10 %).

Run: PYTHONPATH=src python benchmarks/bench_redis_hardening.py [--concurrency 300] [--skip-engine]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import random
import sys
import tracemalloc
import uuid

sys.path.insert(0, "tests")


def _entry(i: int, rng: random.Random):
    from enhanced_llm.cache.entry import CachedCompletion, CacheEntry

    words = " ".join(rng.choice(["alpha", "beta", "gamma", "delta", "epsilon", "zeta"]) for _ in range(rng.randint(20, 200)))
    n_out = rng.randint(50, 400)
    return CacheEntry(
        key=f"k{i:08d}-{uuid.uuid4().hex}", scope="scope", prompt=f"question {i}: {words}",
        prompt_token_ids=[rng.randint(0, 150_000) for _ in range(rng.randint(20, 300))],
        completions=[CachedCompletion(0, f"answer {i} " + words[: n_out * 4], [rng.randint(0, 150_000) for _ in range(n_out)],
                                      None, "stop", None)],
        question=f"question {i}",
    )


async def bench_memory(bound: int, n: int) -> dict:
    from enhanced_llm import CacheConfig, CacheType
    from enhanced_llm.cache.tiered import TieredCache

    rng = random.Random(0)
    cache = TieredCache(CacheConfig(cache_type=CacheType.MEMORY, memory_cache_size=10**6, memory_cache_bytes=bound, ttl=None))
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    for i in range(n):  # built one by one: what stays allocated is what the cache holds
        cache.put(_entry(i, rng))
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    return {"bound": bound, "held": held, "entries": len(cache.memory), "counted": cache.memory.nbytes}


async def bench_bomb() -> dict:
    import zstandard

    from enhanced_llm import CacheConfig, CacheType
    from enhanced_llm.cache.tiered import TieredCache
    from conftest import unique_prefix

    payload = b"\0" * (64 << 20)
    bomb = b"ELC" + bytes((1, 1)) + zstandard.ZstdCompressor(level=19).compress(payload)
    del payload
    cache = TieredCache(CacheConfig(cache_type=CacheType.REDIS, key_prefix=unique_prefix("bomb")))
    key = "bomb-key"
    stats_before = dict(cache.stats.as_dict())
    try:
        results = {}
        for label, value in (("v1-envelope", bomb), ("v2-envelope", _v2(bomb))):
            await cache.redis.client.set(cache.redis.entry_key(key), value)
            gc.collect()
            tracemalloc.start()
            hit = await cache.get(key)
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            await cache.flush()
            left = await cache.redis.client.exists(cache.redis.entry_key(key))
            results[label] = {"wire_bytes": len(value), "peak": peak, "served": hit is not None, "deleted": not left}
        after = cache.stats.as_dict()
        results["counted"] = {k: after[k] - stats_before.get(k, 0) for k in after if isinstance(after[k], int) and after[k] != stats_before.get(k, 0)}
        return results
    finally:
        await cache.redis.client.delete(cache.redis.entry_key(key))
        await cache.close()


def _v2(v1: bytes) -> bytes:
    """The same zstd body in the hardened envelope (unsigned), when this tree has one (else the v1 value)."""
    try:
        from enhanced_llm.cache.envelope import ENVELOPE_VERSION
    except ImportError:
        return v1
    return b"ELC" + bytes((ENVELOPE_VERSION, 1)) + v1[5:]


async def bench_pool(concurrency: int) -> dict:
    from vllm import SamplingParams

    from conftest import engine_args, unique_prefix
    from enhanced_llm import CacheConfig, CacheType, EnhancedAsyncLLM

    llm = EnhancedAsyncLLM.from_engine_args(
        engine_args(max_num_seqs=256), cache_config=CacheConfig(cache_type=CacheType.MULTI, key_prefix=unique_prefix("pool"))
    )
    try:
        params = SamplingParams(temperature=0.0, max_tokens=4)

        async def one(i: int) -> bool:
            final = None
            async for out in llm.generate(f"distinct prompt {i} {uuid.uuid4().hex}", params, uuid.uuid4().hex):
                final = out
            return final is not None and final.finished

        await one(-1)  # warm up
        ok = await asyncio.gather(*[one(i) for i in range(concurrency)])
        await llm.flush_cache_writes()
        stats = llm.get_cache_stats()
        return {"requests": concurrency, "finished": sum(ok), "redis_errors": stats["redis_errors"],
                "redis_busy": stats.get("redis_busy", "n/a"), "stores": stats["stores"]}
    finally:
        await llm.cleanup()


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--concurrency", type=int, default=300)
    ap.add_argument("--skip-engine", action="store_true")
    ap.add_argument("--memory-bound", type=int, default=16 << 20)
    ap.add_argument("--entries", type=int, default=8000, help="entries put into the memory level")
    args = ap.parse_args()
    mib = 1 << 20
    bomb = await bench_bomb()
    for label in ("v1-envelope", "v2-envelope"):
        b = bomb[label]
        print(f"bomb {label}: {b['wire_bytes']} B on the wire -> peak {b['peak'] / mib:.2f} MiB during lookup "
              f"(target < 4 MiB), served={b['served']}, deleted={b['deleted']}")
    print(f"bomb counters: {bomb['counted']}")
    mem = await bench_memory(args.memory_bound, args.entries)
    print(f"memory: bound {mem['bound'] / mib:.1f} MiB, held {mem['held'] / mib:.2f} MiB "
          f"({mem['held'] / mem['bound']:.2f}x of the bound, target 0.90-1.10), {mem['entries']} entries, "
          f"cache counts {mem['counted'] / mib:.2f} MiB")
    if not args.skip_engine:
        pool = await bench_pool(args.concurrency)
        print(f"pool: {pool['requests']} concurrent distinct requests: finished {pool['finished']}, "
              f"redis_errors {pool['redis_errors']} (target 0), redis_busy {pool['redis_busy']}, stores {pool['stores']}")


if __name__ == "__main__":
    asyncio.run(main())
