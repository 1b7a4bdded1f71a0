"""VectorIndex lookup latency, recall and memory at 100k and 1M synthetic vectors (384-dim, one scope).

Data: clustered unit vectors, the shape real sentence embeddings have (topics):
``n / 50`` random centres, each stored vector at cosine ~0.7 from its centre.
Queries: stored vectors plus noise at cosine ~0.9 (a paraphrase-level query,
above the cache's 0.8 threshold). Uniform random vectors on the 384-dim sphere
have no neighbourhood structure at all and are the worst case for any
approximate index; they say little about a cache of questions.

The index is filled the way the cache fills it: ``add_many`` in chunks of 50k
through ``VectorIndex`` (flat first, switched to approximate past
``approximate_after``, IVF re-trained as the scope grows 4x), so the build time
includes every re-training. Lookups are single-vector ``VectorIndex.search``
calls (k=8), timed one by one. recall@1 = share of queries whose top result
equals exact (brute-force) search's top result. Memory per entry: RSS growth
divided by entries, and the index's own estimate (vectors, ids, centroids,
Python entry objects and question text).

Usage: python benchmarks/bench_index.py [--sizes 100000 1000000] [--types ivf] [--nprobe 32]
Prints JSON (with the load average: the machine may be shared).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import sys
import time

import numpy as np

from enhanced_llm.semantic import VectorIndex


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def unit(x: np.ndarray) -> np.ndarray:
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def make_chunk(rng: np.random.Generator, centres: np.ndarray, m: int) -> np.ndarray:
    dim = centres.shape[1]
    c = centres[rng.integers(0, len(centres), m)]
    return unit(c + rng.standard_normal((m, dim), dtype=np.float32) / np.sqrt(dim))


def bench(n: int, dim: int, queries: int, index_type: str, nprobe: int, approximate_after: int) -> dict:
    rng = np.random.default_rng(0)
    centres = unit(rng.standard_normal((max(1, n // 50), dim), dtype=np.float32))
    gc.collect()
    before = rss_bytes()
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    ix = VectorIndex(dim, max_entries=n, approximate_after=approximate_after, index_type=index_type, nprobe=nprobe)
    chunk = 50_000
    sample_ids = np.sort(rng.choice(n, size=min(n, queries), replace=False))
    samples = np.zeros((len(sample_ids), dim), dtype=np.float32)
    build_s = 0.0
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        x = make_chunk(rng, centres, m)
        sel = (sample_ids >= start) & (sample_ids < start + m)
        samples[sel] = x[sample_ids[sel] - start]
        t0 = time.perf_counter()
        ix.add_many("bench", [(f"entry-{start + i:08d}", f"question number {start + i}") for i in range(m)], x)
        build_s += time.perf_counter() - t0
        del x
    t0 = time.perf_counter()
    ix.wait_for_rebuilds()  # approximate switch and re-training run in the background
    build_s += time.perf_counter() - t0
    gc.collect()
    after = rss_bytes()
    sc = ix._scopes["bench"]
    q = unit(samples + rng.standard_normal(samples.shape, dtype=np.float32) * (0.48 / np.sqrt(dim)))

    # Exact top-1 for every query: brute force over the stored vectors, regenerated chunk by chunk
    # from the same seed (no second copy of the whole data set in memory).
    rng2 = np.random.default_rng(0)
    unit(rng2.standard_normal((max(1, n // 50), dim), dtype=np.float32))
    rng2.choice(n, size=min(n, queries), replace=False)
    best_s = np.full(len(q), -np.inf, dtype=np.float32)
    best_i = np.full(len(q), -1, dtype=np.int64)
    for start in range(0, n, chunk):
        x = make_chunk(rng2, centres, min(chunk, n - start))
        scores = q @ x.T
        j = scores.argmax(1)
        s = scores[np.arange(len(q)), j]
        better = s > best_s
        best_s[better], best_i[better] = s[better], start + j[better]
    del x, scores
    exact = [f"entry-{i:08d}" for i in best_i]

    for v in q[:50]:  # warm-up
        ix.search("bench", v, 8)
    lat, found, own = [], 0, 0
    for i, v in enumerate(q):
        t = time.perf_counter()
        res = ix.search("bench", v, 8)
        lat.append(time.perf_counter() - t)
        found += bool(res) and res[0].entry_id == exact[i]
        own += bool(res) and res[0].entry_id == f"entry-{sample_ids[i]:08d}"
    during = lookups_during_retraining(ix, q)
    st = ix.stats()
    out = {
        "entries": n,
        "index_type": index_type,
        "kind": sc.kind,
        "nlist": int(sc.index.nlist) if sc.kind == "ivf" else None,
        "nprobe": nprobe if sc.kind == "ivf" else None,
        "rebuilds": st["rebuilds"],
        "build_seconds": round(build_s, 1),
        "lookup_p50_ms": round(1000 * float(np.percentile(lat, 50)), 3),
        "lookup_p90_ms": round(1000 * float(np.percentile(lat, 90)), 3),
        "lookup_p99_ms": round(1000 * float(np.percentile(lat, 99)), 3),
        "recall_at_1_vs_exact": round(found / len(q), 4),
        "own_vector_at_1": round(own / len(q), 4),
        "query_cosine_to_own_mean": round(float((q * samples).sum(1).mean()), 3),
        "memory_per_entry_bytes_rss": round((after - before) / n),
        "memory_per_entry_bytes_estimate": round(st["memory_bytes"] / n),
        "during_retraining": during,
        "peak_rss_growth_mb": round((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before) / 1024),
        "load_average_after": os.getloadavg(),
    }
    del ix
    gc.collect()
    return out


def lookups_during_retraining(ix: VectorIndex, q: np.ndarray) -> dict:
    """Lookup latency while the scope re-trains in the background (forced, as if it had grown 4x)."""
    sc = ix._scopes["bench"]
    if not sc.approximate:
        return {}
    with ix._lock:
        ix._start_rebuild("bench", sc)  # what add_many does when the scope has grown 4x
    start, lat = time.perf_counter(), []
    while sc.rebuild is not None:
        t = time.perf_counter()
        ix.search("bench", q[len(lat) % len(q)], 8)
        lat.append(time.perf_counter() - t)
    ix.wait_for_rebuilds()
    return {
        "retrain_seconds": round(time.perf_counter() - start, 1),
        "lookups": len(lat),
        "lookup_p50_ms": round(1000 * float(np.percentile(lat, 50)), 3) if lat else None,
        "lookup_p99_ms": round(1000 * float(np.percentile(lat, 99)), 3) if lat else None,
        "lookup_max_ms": round(1000 * max(lat), 3) if lat else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--types", nargs="+", default=["ivf"], choices=["ivf", "hnsw", "flat"])
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--nprobe", type=int, default=32)
    ap.add_argument("--approximate-after", type=int, default=20_000)
    args = ap.parse_args()
    import faiss

    out = {
        "dim": args.dim,
        "k": 8,
        "cpus": os.cpu_count(),
        "faiss_threads": faiss.omp_get_max_threads(),
        "load_average_before": os.getloadavg(),
        "results": [],
    }
    for t in args.types:
        for n in args.sizes:
            out["results"].append(bench(n, args.dim, args.queries, t, args.nprobe, args.approximate_after))
            print(json.dumps(out["results"][-1]), file=sys.stderr, flush=True)
    json.dump(out, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
