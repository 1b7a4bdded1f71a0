"""FAISS vector index of cached questions, partitioned by scope.

Every stored vector points to an ``entry_id`` (the exact-cache key of the
answer) and keeps the question text, so a match can be verified and served.

* **Scopes.** A scope (model + sampling settings + ...) is its own FAISS index:
  a query only ever sees entries of its own scope. ``scope=None`` in
  :meth:`VectorIndex.search` searches all scopes (similarity search).
* **Exact, then approximate.** A scope starts as ``IndexFlatIP`` (exact inner
  product = cosine on normalised vectors). Once it holds more than
  ``approximate_after`` live entries it is rebuilt as an approximate index,
  and back to flat if it shrinks below half of that. ``index_type`` picks it:

  ``"ivf"`` (default)  ``IndexIVFFlat``: k-means cells (``nlist`` ~ 4·sqrt(n)),
                       a query scans the ``nprobe`` nearest cells. Trains in
                       seconds, builds 1M vectors in about a minute on 2 cores,
                       ~1.6 KB per 384-dim entry, removes natively. Re-trained
                       (rebuilt) when the scope has grown 4x since the last
                       training, so cells stay small.
  ``"hnsw"``           ``IndexHNSWFlat`` (M=16): fast queries but slow to build
                       (tens of minutes for 1M on 2 cores) and no deletion.
  ``"flat"``           never approximate (exact; ~20 ms per query at 100k).

* **Rebuilds off the lock.** Switching a scope to the approximate index and
  re-training IVF take seconds to tens of seconds for large scopes. They run
  in a background thread on a snapshot of the scope's vectors while searches
  and writes go on against the old index; additions and removals made
  meanwhile are replayed onto the new index before it replaces the old one.
  (Peak memory during a rebuild: the old index, the snapshot and the new one.)
  ``background_rebuild=False`` rebuilds inline instead.
* **Removal.** A removed id leaves the id map at once (it is never returned
  again) and searches ask FAISS to skip it (an ``IDSelectorNot`` in the search
  parameters). When such tombstones exceed a quarter of a scope (and at least
  64) the scope is compacted: ``remove_ids`` for flat and IVF, a rebuild from
  the live vectors for HNSW (seconds for 100k entries, under the lock).
* **Bounds.** At most ``max_entries`` live entries over all scopes, at most
  ``max_bytes`` of memory (vectors, tombstones not yet compacted, question and id
  texts, per-scope FAISS objects: :meth:`memory_bytes`, kept up to date as entries
  come and go) and at most ``max_scopes`` scopes. Past the entry or byte bound the
  least recently used entries (added or :meth:`touch`-ed) are evicted, down to 95 %
  of the byte bound, and the scopes they leave are compacted at once, so tombstones
  do not hold the memory. Past the scope bound the least recently used scope
  (added to or searched) is dropped whole. Either way the entry ids go to
  ``on_evict`` (outside the lock). A dropped entry is only gone from this process:
  Redis keeps it, and it comes back at the next hydration (a restart, or a re-sync
  after the change stream was trimmed past this replica); a new addition to a
  dropped scope starts it again.

All methods are thread-safe (one re-entrant lock); the async facade calls them
from a worker thread because FAISS work is CPU-bound. Single-query searches
run FAISS on one thread: on a small, shared CPU its OpenMP pool costs more
than it saves for one vector.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import numpy as np

from enhanced_llm.errors import MissingDependencyError
from enhanced_llm.semantic.bounds import IndexBounds, _entry_cost, _Entry, _Rebuild, _Scope

__all__ = ["Candidate", "VectorIndex"]

EvictCallback = Callable[[list[str]], None]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Candidate:
    """One search result: a stored question and its cosine similarity to the query."""

    entry_id: str
    question: str
    score: float
    scope: str = ""


def _faiss() -> Any:
    try:
        import faiss
    except ImportError as exc:
        raise MissingDependencyError("faiss-cpu", "semantic cache", extra="semantic") from exc
    return faiss


class VectorIndex(IndexBounds):
    """Scoped FAISS index of ``(entry_id, question, vector)`` with LRU bound."""

    def __init__(
        self,
        dim: int,
        *,
        max_entries: int = 100_000,
        max_bytes: int | None = None,
        max_scopes: int | None = None,
        approximate_after: int = 20_000,
        on_evict: EvictCallback | None = None,
        index_type: str = "ivf",
        nprobe: int = 32,
        hnsw_m: int = 16,
        ef_construction: int = 40,
        ef_search: int = 64,
        background_rebuild: bool = True,
    ) -> None:
        if index_type not in ("ivf", "hnsw", "flat"):
            raise ValueError(f"index_type must be 'ivf', 'hnsw' or 'flat', not {index_type!r}")
        self._faiss = _faiss()
        self.dim = dim
        self.max_entries = max(1, max_entries)
        self.max_bytes = None if max_bytes is None else max(1, max_bytes)
        self.max_scopes = None if max_scopes is None else max(1, max_scopes)
        self.approximate_after = max(1, approximate_after)
        self.on_evict = on_evict
        self.index_type = index_type
        self.nprobe = max(1, nprobe)
        self.hnsw_m = hnsw_m
        self.ef_construction = ef_construction
        self.ef_search = ef_search
        self.background_rebuild = background_rebuild
        self._lock = threading.RLock()
        self._rebuilders: set[threading.Thread] = set()
        self._scopes: OrderedDict[str, _Scope] = OrderedDict()  # LRU order of scopes, oldest first
        self._faiss_bytes = 0  # sum of _Scope.bytes + name bytes
        self._entry_bytes = 0  # entries' strings and slots
        self._entries: OrderedDict[int, _Entry] = OrderedDict()  # LRU order, oldest first
        self._by_entry_id: dict[str, int] = {}
        self._next_id = 1
        self.evictions = 0
        self.rebuilds = 0
        self.scope_mismatches = 0  # search results dropped: the entry's scope is not the scope searched
        self.scope_drops = 0

    # -- writing ---------------------------------------------------------------

    def add(self, scope: str, entry_id: str, question: str, vector: np.ndarray) -> None:
        """Store one vector; an existing ``entry_id`` is replaced."""
        self.add_many(scope, [(entry_id, question)], np.asarray(vector, dtype=np.float32).reshape(1, -1))

    def add_many(self, scope: str, items: list[tuple[str, str]], vectors: np.ndarray) -> None:
        """Store ``(entry_id, question)`` pairs with their ``(n, dim)`` vectors in one scope."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, self.dim)
        if len(items) != len(vectors):
            raise ValueError("items and vectors differ in length")
        if not items:
            return
        with self._lock:
            for entry_id, _ in items:
                self._remove_locked(entry_id)
            ids = np.arange(self._next_id, self._next_id + len(items), dtype=np.int64)
            self._next_id += len(items)
            sc = self._scopes.get(scope)
            evicted: list[str] = []
            if sc is None:
                sc = self._scopes[scope] = _Scope(index=self._new_index("flat"), name_bytes=sys.getsizeof(scope))
                self._faiss_bytes += sc.name_bytes
                evicted += self._drop_scopes_locked(keep=scope)
            else:
                self._scopes.move_to_end(scope)
            sc.index.add_with_ids(vectors, ids)
            if sc.rebuild is not None:
                sc.rebuild.added.append((ids, vectors))
            sc.live += len(items)
            for i, (entry_id, question) in zip(ids.tolist(), items):
                self._entries[i] = _Entry(entry_id, question, scope)
                self._by_entry_id[entry_id] = i
                sc.ids.add(i)
                self._entry_bytes += _entry_cost(entry_id, question)
            self._refresh(sc)
            if self.index_type != "flat" and not sc.approximate and sc.live > self.approximate_after:
                self._start_rebuild(scope, sc)
            elif sc.kind == "ivf" and sc.live > 4 * sc.trained_for:
                self._start_rebuild(scope, sc)  # re-train: cells grew 4x
            evicted += self._evict_locked()
        if evicted and self.on_evict is not None:
            self.on_evict(evicted)

    def remove(self, entry_id: str) -> bool:
        """Forget ``entry_id``; returns whether it was stored."""
        with self._lock:
            return self._remove_locked(entry_id)

    def touch(self, entry_id: str) -> None:
        """Mark an entry as recently used (it was served), delaying its eviction."""
        with self._lock:
            i = self._by_entry_id.get(entry_id)
            if i is not None:
                self._entries.move_to_end(i)

    def wait_for_rebuilds(self, timeout: float | None = None) -> bool:
        """Wait until no background rebuild runs; False when ``timeout`` passed first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                threads = list(self._rebuilders)
            if not threads:
                return True
            for t in threads:
                t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
            if deadline is not None and time.monotonic() >= deadline:
                with self._lock:
                    return not self._rebuilders

    def clear(self) -> None:
        with self._lock:
            self._scopes.clear()
            self._entries.clear()
            self._by_entry_id.clear()
            self._faiss_bytes = self._entry_bytes = 0

    # -- reading -----------------------------------------------------------------

    def search(self, scope: str | None, vector: np.ndarray, k: int) -> list[Candidate]:
        """Up to ``k`` stored questions of ``scope`` (None: every scope), cosine descending."""
        return self.search_many(scope, np.asarray(vector, dtype=np.float32).reshape(1, -1), k)[0]

    def search_many(self, scope: str | None, vectors: np.ndarray, k: int) -> list[list[Candidate]]:
        """:meth:`search` for each row of ``vectors`` (one FAISS call per scope)."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, self.dim)
        results: list[list[Candidate]] = [[] for _ in range(len(vectors))]
        if k <= 0 or not len(vectors):
            return results
        with self._lock:
            names = list(self._scopes) if scope is None else ([scope] if scope in self._scopes else [])
            if scope is not None and names:
                self._scopes.move_to_end(scope)  # a scope in use is not the one dropped
            for name in names:
                sc = self._scopes[name]
                ntotal = sc.index.ntotal
                if sc.live <= 0 or ntotal == 0:
                    continue
                scores, ids = self._search(sc, vectors, min(k, sc.live))
                for row, (srow, irow) in enumerate(zip(scores.tolist(), ids.tolist())):
                    for s, i in zip(srow, irow):
                        e = self._entries.get(i) if i >= 0 else None
                        if e is None:
                            continue
                        if e.scope != name:  # a vector filed under another scope than its entry's
                            self.scope_mismatches += 1
                            continue
                        results[row].append(Candidate(e.entry_id, e.question, float(s), e.scope))
        for row in results:
            row.sort(key=lambda c: c.score, reverse=True)
            del row[k:]
        return results

    def get(self, entry_id: str) -> tuple[str, str] | None:
        """``(scope, question)`` of a stored entry, or None."""
        with self._lock:
            i = self._by_entry_id.get(entry_id)
            if i is None:
                return None
            e = self._entries[i]
            return e.scope, e.question

    def __contains__(self, entry_id: object) -> bool:
        return entry_id in self._by_entry_id

    def __len__(self) -> int:
        return len(self._entries)

    def entry_ids(self) -> Iterable[str]:
        with self._lock:
            return list(self._by_entry_id)

    # -- sizes -------------------------------------------------------------------

    def memory_bytes(self) -> int:
        """Estimate of the bytes held (O(1)): FAISS vectors (tombstones included) and objects per scope,
        IVF centroids, HNSW links, and the entries' question and id strings and slots."""
        with self._lock:
            return self._faiss_bytes + self._entry_bytes

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "entries": len(self._entries),
                "scopes": len(self._scopes),
                "index_type": self.index_type,
                "approximate_scopes": sum(1 for s in self._scopes.values() if s.approximate),
                "tombstones": sum(len(s.dead) for s in self._scopes.values()),
                "evictions": self.evictions,
                "rebuilds": self.rebuilds,
                "scope_drops": self.scope_drops,
                "max_bytes": self.max_bytes,
                "max_scopes": self.max_scopes,
                "scope_mismatches": self.scope_mismatches,
                "memory_bytes": self.memory_bytes(),
            }

    # -- internals -----------------------------------------------------------------

    def _new_index(self, kind: str, train: np.ndarray | None = None) -> Any:
        faiss = self._faiss
        if kind == "ivf":
            assert train is not None
            n = len(train)
            nlist = int(max(1, min(65536, 4 * np.sqrt(n), n // 39)))
            quantizer = faiss.IndexFlatIP(self.dim)
            index = faiss.IndexIVFFlat(quantizer, self.dim, nlist, faiss.METRIC_INNER_PRODUCT)
            index.cp.niter = 10
            index.cp.max_points_per_centroid = 32  # sample <= 32 points per cell: seconds, not minutes
            index.nprobe = self.nprobe
            index.train(np.ascontiguousarray(train))
            return index
        if kind == "hnsw":
            base = faiss.IndexHNSWFlat(self.dim, self.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            base.hnsw.efConstruction = self.ef_construction
            base.hnsw.efSearch = self.ef_search
        else:
            base = faiss.IndexFlatIP(self.dim)
        return faiss.IndexIDMap2(base)

    def _remove_locked(self, entry_id: str, compact: bool = True) -> bool:
        i = self._by_entry_id.pop(entry_id, None)
        if i is None:
            return False
        e = self._entries.pop(i)
        self._entry_bytes -= _entry_cost(e.entry_id, e.question)
        sc = self._scopes[e.scope]
        sc.ids.discard(i)
        sc.dead.add(i)
        sc.params = None
        sc.live -= 1
        if sc.live == 0:
            self._delete_scope(e.scope, sc)
        elif compact and len(sc.dead) >= 64 and len(sc.dead) * 4 > sc.index.ntotal:
            self._compact(sc)
            self._refresh(sc)
        return True

    def _start_rebuild(self, name: str, sc: _Scope) -> None:
        """Rebuild ``sc`` as the approximate index: in a background thread, or inline."""
        if sc.rebuild is not None:
            return  # one at a time; the next write re-checks the need
        if not self.background_rebuild:
            self._rebuild(sc, approximate=True)
            return
        ids, vectors = self._live_vectors(sc)
        sc.rebuild = _Rebuild(dead_before=set(sc.dead))
        thread = threading.Thread(
            target=self._rebuild_in_background, args=(name, sc, ids, vectors), name=f"faiss-rebuild-{name[:8]}", daemon=True
        )
        self._rebuilders.add(thread)
        thread.start()

    def _rebuild_in_background(self, name: str, sc: _Scope, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Build the new index off the lock, then replay what changed meanwhile and swap it in."""
        try:
            kind = self.index_type if len(ids) >= 2 else "flat"
            try:
                new = self._new_index(kind, train=vectors if kind == "ivf" else None)
                new.add_with_ids(vectors, ids)
            except Exception:  # noqa: BLE001 - keep the old index
                log.exception("rebuilding a vector index scope failed; it stays as it was")
                with self._lock:
                    sc.rebuild = None
                return
            del vectors
            with self._lock:
                work, sc.rebuild = sc.rebuild, None
                if self._scopes.get(name) is not sc or work is None:
                    return  # the scope was emptied or cleared meanwhile
                for added_ids, added in work.added:
                    new.add_with_ids(added, added_ids)
                sc.index, sc.approximate, sc.kind, sc.params = new, kind != "flat", kind, None
                sc.dead = sc.dead - work.dead_before  # removed meanwhile: still in the new index
                sc.trained_for = len(ids) if kind == "ivf" else 0
                self._refresh(sc)
                self.rebuilds += 1
        finally:
            with self._lock:
                self._rebuilders.discard(threading.current_thread())

    def _compact(self, sc: _Scope, force: bool = False) -> None:
        """Drop a scope's tombstones (``force``: in place also for a small scope, for the byte bound)."""
        if sc.rebuild is not None:
            return  # the swap keeps these tombstones; a removal after it compacts
        if (sc.kind == "flat" or sc.kind == "ivf") and (force or sc.live >= self.approximate_after // 2):
            sc.index.remove_ids(np.fromiter(sc.dead, dtype=np.int64, count=len(sc.dead)))
            sc.dead.clear()
            sc.params = None
            return
        self._rebuild(sc, approximate=sc.approximate and sc.live >= self.approximate_after // 2)

    def _rebuild(self, sc: _Scope, approximate: bool) -> None:
        """Re-create a scope's index from its live vectors (drops tombstones; IVF re-trains)."""
        ids, vectors = self._live_vectors(sc)
        sc.index = None  # free the old index before building the new one (peak memory)
        kind = self.index_type if approximate and self.index_type != "flat" else "flat"
        if kind == "ivf" and len(ids) < 2:
            kind = "flat"
        try:
            new = self._new_index(kind, train=vectors if kind == "ivf" else None)
        except Exception:  # noqa: BLE001 - never lose the scope: fall back to exact search
            kind, new = "flat", self._new_index("flat")
        if len(ids):
            new.add_with_ids(vectors, ids)
        sc.index, sc.approximate, sc.kind, sc.params = new, kind != "flat", kind, None
        sc.trained_for = len(ids) if kind == "ivf" else 0
        sc.dead.clear()
        self._refresh(sc)
        self.rebuilds += 1

    def _live_vectors(self, sc: _Scope) -> tuple[np.ndarray, np.ndarray]:
        """``(ids, vectors)`` of a scope's live (not tombstoned) entries."""
        faiss = self._faiss
        if sc.kind == "ivf":
            ivf = sc.index
            lists = ivf.invlists
            ids = np.empty(ivf.ntotal, dtype=np.int64)
            vectors = np.empty((ivf.ntotal, self.dim), dtype=np.float32)
            at = 0
            for li in range(ivf.nlist):  # IVF-flat codes are the float32 vectors themselves
                size = lists.list_size(li)
                if not size:
                    continue
                ids[at : at + size] = faiss.rev_swig_ptr(lists.get_ids(li), size)
                codes = faiss.rev_swig_ptr(lists.get_codes(li), size * lists.code_size)
                vectors[at : at + size] = codes.view(np.float32).reshape(size, self.dim)
                at += size
            ids, vectors = ids[:at], vectors[:at]
        else:
            old = sc.index
            ids = faiss.vector_to_array(old.id_map).astype(np.int64)
            vectors = faiss.downcast_index(old.index).reconstruct_n(0, old.ntotal) if old.ntotal else np.zeros((0, self.dim), np.float32)
        if sc.dead and len(ids):
            keep = ~np.isin(ids, np.fromiter(sc.dead, dtype=np.int64, count=len(sc.dead)))
            ids, vectors = ids[keep], vectors[keep]
        return ids, vectors

    def _search(self, sc: _Scope, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        faiss = self._faiss
        if len(vectors) == 1 and sc.approximate:
            # One query: FAISS's OpenMP pool only adds thread hand-off (ms under load on 2 cores).
            threads = faiss.omp_get_max_threads()
            faiss.omp_set_num_threads(1)
            try:
                return sc.index.search(vectors, k, params=self._params(sc))
            finally:
                faiss.omp_set_num_threads(threads)
        return sc.index.search(vectors, k, params=self._params(sc))

    def _params(self, sc: _Scope) -> Any:
        """Search parameters for a scope: efSearch for HNSW, a selector skipping tombstones."""
        if sc.params is None and (sc.dead or sc.approximate):
            faiss = self._faiss
            if sc.kind == "hnsw":
                p = faiss.SearchParametersHNSW()
                p.efSearch = self.ef_search
            elif sc.kind == "ivf":
                p = faiss.SearchParametersIVF()
                p.nprobe = self.nprobe
            else:
                p = faiss.SearchParameters()
            if sc.dead:
                batch = faiss.IDSelectorBatch(np.fromiter(sc.dead, dtype=np.int64, count=len(sc.dead)))
                p.sel = faiss.IDSelectorNot(batch)
                p._keep = batch  # the C++ selector points at it
            sc.params = p
        return sc.params
