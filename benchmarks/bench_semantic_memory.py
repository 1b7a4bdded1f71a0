"""Resident memory of the semantic layer against its configured byte bounds.

Scenarios (each in a fresh child process, so one's heap does not hide another's):

* ``index``: 10,000 tenants (scopes) each storing a few questions (default 3), through
  ``VectorIndex`` with ``max_bytes`` and ``max_scopes`` set; unit vectors of the model's size
  (384), questions shaped like real ones (~60 characters, each its own string).
  Resident memory = RSS growth after ``gc`` and ``malloc_trim`` (what the process holds), against
  the bound. Also the index's own estimate (``memory_bytes()``), which the bound is applied to.
* ``unbounded``: the same data with no byte bound, to check the estimate where it is not clamped
  (RSS vs estimate, for several scope sizes).
* ``embedder``: the real MiniLM embedder's vector and tokenizer-fact caches
  (``embedding_cache_bytes``) filled with about 3x more distinct texts than fit. Its RSS growth also
  holds what the model runtime's own buffers grew while encoding (an upper bound); ``given_back`` in
  the JSON is what clearing the caches returned (a lower bound: freed small objects stay mapped).

Target: resident memory within 10 % of the configured bound (the issue's), and never above it by
more than that. Usage: python benchmarks/bench_semantic_memory.py [--scopes 10000] [--per 3]
[--bound-mib 4] [--json FILE]. Prints one table (the machine may be shared and loaded).
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import multiprocessing as mp
import os
import sys

import numpy as np

TARGET = 0.10


def rss() -> int:
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _vectors(n: int, dim: int, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def index_case(scopes: int, per: int, bound: int | None, max_scopes: int | None, out: mp.Queue) -> None:
    from enhanced_llm.semantic import VectorIndex

    dim = 384
    vecs = _vectors(scopes * per, dim)
    idx = VectorIndex(dim, max_entries=10**9, max_bytes=bound, max_scopes=max_scopes, approximate_after=10**9)
    warm = _vectors(64, dim, seed=1)  # FAISS's and numpy's one-time set-up is not what the index holds
    for i in range(64):
        idx.add(f"warm{i % 8}", f"w{i}", f"warm-up question {i}", warm[i])
        idx.search(f"warm{i % 8}", warm[i], 8)
    idx.clear()
    base = rss()
    k = 0
    for s in range(scopes):
        scope = f"{s:064x}"  # scope keys are hex digests
        for _ in range(per):
            question = f"How do I configure setting number {k} of my account dashboard?"
            idx.add(scope, f"{k:032x}", question, vecs[k])
            k += 1
    held = rss() - base
    st = idx.stats()
    out.put(dict(case="index", scopes_added=scopes, per_scope=per, entries=st["entries"], scopes=st["scopes"],
                 bound=bound, max_scopes=max_scopes, rss=held, estimate=st["memory_bytes"],
                 evictions=st["evictions"], scope_drops=st["scope_drops"]))


def embedder_case(bound: int, out: mp.Queue) -> None:
    from enhanced_llm.semantic import Embedder

    emb = Embedder(cache_bytes=bound)
    emb.load()
    texts = [f"What is the best way to learn topic number {i} about gardening in spring?" for i in range(3000)]
    emb.embed_sync(texts[:64])  # warm the model's own buffers before the baseline
    for t in texts[:64]:
        emb.text_info(t)
    emb._cache.clear()
    emb._info_cache.clear()
    base = rss()
    n = 0
    for n in range(0, len(texts), 64):  # about 3x more texts than the bound holds
        batch = texts[n : n + 64]
        for t in batch:
            emb.text_info(t)
        emb.embed_sync(batch)
    n = len(texts)
    full = rss()
    usage = emb.cache_usage()
    emb._cache.clear()  # what clearing the caches gives back is what they held (the model's own
    emb._info_cache.clear()  # buffers grew too while encoding, and stay)
    given_back = full - rss()
    out.put(dict(case="embedder", texts=n, bound=bound, rss=full - base, given_back=given_back,
                 estimate=usage["vector_cache_bytes"] + usage["info_cache_bytes"]))


def run(target, *args) -> dict:
    q: mp.Queue = mp.get_context("spawn").Queue()
    p = mp.get_context("spawn").Process(target=target, args=(*args, q))
    p.start()
    res = q.get(timeout=1800)
    p.join()
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scopes", type=int, default=10_000)
    ap.add_argument("--per", type=int, default=3)
    ap.add_argument("--bound-mib", type=float, default=4.0)
    ap.add_argument("--max-scopes", type=int, default=None)
    ap.add_argument("--skip-embedder", action="store_true")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    bound = int(a.bound_mib * (1 << 20))
    rows = [
        run(index_case, a.scopes, a.per, bound, a.max_scopes),
        run(index_case, a.scopes, a.per, 4 * bound, a.max_scopes),
        run(index_case, a.scopes, a.per, None, 1000),
        run(index_case, a.scopes // 10, a.per, None, None),
        run(index_case, 100, 100, None, None),
        run(index_case, 1, 10_000, None, None),
    ]
    if not a.skip_embedder:
        rows.append(run(embedder_case, bound))
    print(f"load average {os.getloadavg()[0]:.1f} (shared machine); RSS after gc + malloc_trim, in a fresh process per row")
    print(f"{'case':9} {'scopes':>7} {'entries':>8} {'bound MiB':>9} {'RSS MiB':>8} {'estimate MiB':>12} "
          f"{'RSS/bound':>9} {'RSS/est.':>8}  target")
    ok = True
    for r in rows:
        bound_r = r.get("bound") if r["case"] == "embedder" or r.get("bound") else None
        ratio_b = r["rss"] / bound_r if bound_r else None
        ratio_e = r["rss"] / r["estimate"] if r["estimate"] else float("nan")
        if ratio_b is not None:
            met = ratio_b <= 1 + TARGET and r["estimate"] <= bound_r
            target = f"RSS <= bound +{TARGET:.0%}: {'met' if met else 'MISSED'}"
        else:
            met = abs(ratio_e - 1) <= TARGET
            target = f"RSS within {TARGET:.0%} of estimate: {'met' if met else 'MISSED'}"
        ok &= met
        print(f"{r['case']:9} {r.get('scopes', '-'):>7} {r.get('entries', r.get('texts')):>8} "
              f"{(f'{bound_r / 2**20:.2f}' if bound_r else '-'):>9} {r['rss'] / 2**20:>8.2f} {r['estimate'] / 2**20:>12.2f} "
              f"{(f'{ratio_b:.3f}' if ratio_b is not None else '-'):>9} {ratio_e:>8.3f}  {target}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
