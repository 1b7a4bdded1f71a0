"""The vector index's records and its memory bounds (entries, bytes, scopes).

:class:`IndexBounds` is the part of :class:`~.index.VectorIndex` that counts what it holds and
keeps it within ``max_entries``, ``max_bytes`` and ``max_scopes`` (see the index's module doc):
the byte count is kept up to date as entries come and go (O(1) to read), from a model of what
FAISS and CPython really hold, fitted on resident memory measured here
(``benchmarks/bench_semantic_memory.py``: within a few per cent for one scope of 10k entries,
100 scopes of 100, 1,000 of 3, and under a bound with 10,000 scopes of 3).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["IndexBounds"]


@dataclass(slots=True)
class _Entry:
    entry_id: str
    question: str
    scope: str


@dataclass(slots=True)
class _Scope:
    index: Any  # IndexIDMap2 over IndexFlatIP / IndexHNSWFlat, or IndexIVFFlat (ids native)
    approximate: bool = False
    live: int = 0
    dead: set[int] = field(default_factory=set)
    params: Any = None  # cached SearchParameters that skip the tombstones
    kind: str = "flat"  # "flat", "hnsw" or "ivf"
    trained_for: int = 0  # IVF: live entries when its cells were trained
    rebuild: _Rebuild | None = None  # a background rebuild under way
    ids: set[int] = field(default_factory=set)  # live internal ids (a dropped scope takes them all)
    bytes: int = 0  # what memory_bytes() counts for its FAISS side (see VectorIndex._scope_bytes)
    name_bytes: int = 0


@dataclass(slots=True)
class _Rebuild:
    """What happened to a scope since its background rebuild took its snapshot."""

    dead_before: set[int]  # tombstones already left out of the snapshot
    added: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)  # (ids, vectors) to replay


# Memory model, fitted on RSS measured here (CPython 3.11, faiss-cpu, glibc; see
# benchmarks/bench_semantic_memory.py): a scope's FAISS objects, Python wrappers and slots cost
# about 1.7 KB; an entry about 330 bytes beyond its vector and its question and id strings. A
# small flat scope's vectors sit in a buffer that doubles as it grows (a heap allocation: its
# slack is resident); a large one (mmap'ed) is counted as used.
_SCOPE_OVERHEAD = 1700
_ENTRY_OVERHEAD = 330
_MMAP_THRESHOLD = 128 << 10
_LOW_WATERMARK = 0.95  # evicting for the byte bound goes down to this share of it


class IndexBounds:
    """Byte accounting and eviction of :class:`~.index.VectorIndex` (a mixin; all calls under its lock)."""

    dim: int
    hnsw_m: int
    max_entries: int
    max_bytes: int | None
    max_scopes: int | None
    evictions: int
    scope_drops: int
    _faiss: Any
    _scopes: Any  # OrderedDict[str, _Scope]
    _entries: Any  # OrderedDict[int, _Entry]
    _by_entry_id: dict[str, int]
    _faiss_bytes: int
    _entry_bytes: int

    def _remove_locked(self, entry_id: str, compact: bool = True) -> bool:  # provided by VectorIndex
        raise NotImplementedError

    def _compact(self, sc: _Scope, force: bool = False) -> None:  # provided by VectorIndex
        raise NotImplementedError

    def _delete_scope(self, name: str, sc: _Scope) -> None:
        del self._scopes[name]
        self._faiss_bytes -= sc.bytes + sc.name_bytes
        sc.bytes = 0

    def _over(self, reclaim: int = 0) -> bool:
        if len(self._entries) > self.max_entries:
            return True
        if self.max_bytes is None:
            return False
        return self._faiss_bytes + self._entry_bytes - reclaim > self.max_bytes * _LOW_WATERMARK

    def _evict_locked(self) -> list[str]:
        """Least recently used entries out until within the bounds (bytes: down to the low watermark)."""
        evicted: list[str] = []
        if len(self._entries) <= self.max_entries and (self.max_bytes is None or self.memory_bytes() <= self.max_bytes):
            return evicted
        touched: dict[str, int] = {}  # scope -> bytes its tombstones free once compacted
        reclaim = 0
        while self._entries and self._over(reclaim):
            _, e = next(iter(self._entries.items()))
            sc = self._scopes[e.scope]
            self._remove_locked(e.entry_id, compact=False)
            evicted.append(e.entry_id)
            if e.scope not in self._scopes:
                reclaim -= touched.pop(e.scope, 0)  # deleted whole: already freed
            elif sc.rebuild is None and sc.kind != "hnsw":
                touched[e.scope] = touched.get(e.scope, 0) + self._vector_bytes(sc.kind)
                reclaim += self._vector_bytes(sc.kind)
        for name in touched:
            sc = self._scopes.get(name)
            if sc is not None and sc.dead and sc.rebuild is None:
                self._compact(sc, force=True)
                self._refresh(sc)
        self.evictions += len(evicted)
        return evicted

    def _drop_scopes_locked(self, keep: str) -> list[str]:
        """Drop least recently used scopes (not ``keep``) while more than ``max_scopes`` are held."""
        dropped: list[str] = []
        while self.max_scopes is not None and len(self._scopes) > self.max_scopes:
            name = next(iter(self._scopes))
            if name == keep:
                self._scopes.move_to_end(name)
                continue
            sc = self._scopes[name]
            for i in sc.ids:
                e = self._entries.pop(i)
                self._entry_bytes -= _entry_cost(e.entry_id, e.question)
                del self._by_entry_id[e.entry_id]
                dropped.append(e.entry_id)
            sc.ids.clear()
            self._delete_scope(name, sc)  # a background rebuild of it finds the scope gone and gives up
            self.scope_drops += 1
        return dropped

    def _vector_bytes(self, kind: str) -> int:
        per_vec = self.dim * 4 + 8  # vector, id
        if kind != "ivf":
            per_vec += 16  # IndexIDMap2 reverse-map slot
        if kind == "hnsw":
            per_vec += int(self.hnsw_m * 2 * 4 * 1.05) + 8  # level-0 links + upper levels + level
        return per_vec

    def _scope_bytes(self, sc: _Scope) -> int:
        n = sc.index.ntotal if sc.index is not None else 0
        per_vec = self._vector_bytes(sc.kind)
        held = n
        if sc.kind == "flat" and 1 < n and n * per_vec < _MMAP_THRESHOLD:
            held = 1 << (n - 1).bit_length()  # a growing heap buffer: its doubled capacity is resident
        total = _SCOPE_OVERHEAD + held * per_vec
        if sc.kind == "ivf":
            total += self._faiss.extract_index_ivf(sc.index).nlist * self.dim * 4  # centroids
        return total

    def _refresh(self, sc: _Scope) -> None:
        """Re-count a scope's FAISS bytes after its index changed."""
        new = self._scope_bytes(sc)
        self._faiss_bytes += new - sc.bytes
        sc.bytes = new


def _entry_cost(entry_id: str, question: str) -> int:
    return sys.getsizeof(entry_id) + sys.getsizeof(question) + _ENTRY_OVERHEAD
