"""VectorIndex lookup latency and memory at 100k and 1M synthetic vectors (384-dim, one scope, HNSW).

Builds the approximate index (IndexHNSWFlat, M=32) directly from random unit
vectors, then times single-vector searches (k=8) for queries near stored
vectors. Memory per entry: RSS growth divided by entries, and the index's own
estimate. Building 1M takes minutes on 2 cores: ``--sizes 100000`` for a quick run.
Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time

import numpy as np

from enhanced_llm.semantic import VectorIndex


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def bench(n: int, dim: int, queries: int) -> dict:
    rng = np.random.default_rng(0)
    before = rss_bytes()
    ix = VectorIndex(dim, max_entries=n, approximate_after=1)
    t0 = time.perf_counter()
    chunk = 50_000
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        x = rng.standard_normal((m, dim), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        ix.add_many("bench", [(f"entry-{start + i:08d}", f"question {start + i}") for i in range(m)], x)
    build_s = time.perf_counter() - t0
    after = rss_bytes()
    sc = ix._scopes["bench"]
    base = sc.index
    import faiss

    stored = faiss.downcast_index(base.index).reconstruct_n(0, min(n, queries))
    q = stored + 0.05 * rng.standard_normal(stored.shape, dtype=np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    lat, found = [], 0
    for i, v in enumerate(q):
        t = time.perf_counter()
        res = ix.search("bench", v, 8)
        lat.append(time.perf_counter() - t)
        found += bool(res) and res[0].entry_id == f"entry-{i:08d}"
    return {
        "entries": n,
        "approximate": sc.approximate,
        "build_seconds": round(build_s, 1),
        "lookup_p50_ms": round(1000 * float(np.percentile(lat, 50)), 3),
        "lookup_p99_ms": round(1000 * float(np.percentile(lat, 99)), 3),
        "recall_at_1_near_duplicates": round(found / len(q), 4),
        "memory_per_entry_bytes_rss": round((after - before) / n),
        "memory_per_entry_bytes_estimate": round(ix.memory_bytes() / n),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--queries", type=int, default=2000)
    args = ap.parse_args()
    out = {"dim": args.dim, "k": 8, "results": [bench(n, args.dim, args.queries) for n in args.sizes]}
    json.dump(out, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
