"""Level 1: the in-process cache, bounded by entries and bytes, with a TTL (cachetools).

The byte bound counts what memory really holds: the decoded entries (texts, token id lists,
structs, see :func:`~.entry.resident_bytes`), the key, and the bookkeeping of the LRU/TTL
structures per item, not the compressed size the entry has in Redis.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from cachetools import LRUCache, TTLCache

from .entry import CacheEntry, resident_bytes

__all__ = ["MemoryCache", "ITEM_OVERHEAD_BYTES"]

EvictionListener = Callable[[str, CacheEntry], None]

ITEM_OVERHEAD_BYTES = 256
"""Per-item bookkeeping of cachetools (data/size/order dicts, TTL links, the stored pair), measured
with tracemalloc on CPython 3.11 (tests/test_redis_hardening.py checks the total against the bound)."""


class _Notifying:
    """Mixin: report every entry that leaves by size eviction or expiry."""

    listener: EvictionListener | None = None
    evictions: int = 0

    def popitem(self):  # size / count eviction
        key, value = super().popitem()
        self._notify(key, value)
        return key, value

    def _notify(self, key: str, value: tuple[CacheEntry, int]) -> None:
        self.evictions += 1
        if self.listener is not None:
            self.listener(key, value[0])


class _LRU(_Notifying, LRUCache):
    pass


class _TTL(_Notifying, TTLCache):
    def expire(self, time=None):
        expired = super().expire(time)
        for key, value in expired:
            self._notify(key, value)
        return expired


class MemoryCache:
    """LRU (with TTL when given) holding decoded entries; all methods are synchronous and O(1)
    (sizing an entry is linear in its token count, like encoding it)."""

    def __init__(
        self,
        max_entries: int,
        max_bytes: int,
        ttl: float | None,
        on_evict: EvictionListener | None = None,
    ) -> None:
        self.max_entries = max_entries
        sizeof = lambda item: item[1]  # noqa: E731 - (entry, resident size) pairs
        if ttl is None:
            self._data: _LRU | _TTL = _LRU(maxsize=max_bytes, getsizeof=sizeof)
        else:
            self._data = _TTL(maxsize=max_bytes, ttl=ttl, getsizeof=sizeof)
        self._data.listener = on_evict

    @staticmethod
    def sizeof(key: str, entry: CacheEntry) -> int:
        """What holding ``entry`` under ``key`` costs (the key once when it is the entry's own)."""
        key_bytes = 0 if key is entry.key else sys.getsizeof(key)
        return resident_bytes(entry) + key_bytes + ITEM_OVERHEAD_BYTES

    def get(self, key: str) -> CacheEntry | None:
        item = self._data.get(key)
        return None if item is None else item[0]

    def set(self, key: str, entry: CacheEntry) -> bool:
        """Store; False when the entry alone is larger than the byte bound or no entries are allowed."""
        if self.max_entries == 0:
            return False
        nbytes = self.sizeof(key, entry)
        if nbytes > self._data.maxsize:
            return False
        self._data[key] = (entry, nbytes)
        while len(self._data) > self.max_entries:
            self._data.popitem()
        return True

    def delete(self, key: str) -> CacheEntry | None:
        item = self._data.pop(key, None)
        return None if item is None else item[0]

    def clear(self) -> None:
        self._data.clear()

    def __len__(self) -> int:
        return len(self._data)

    @property
    def nbytes(self) -> int:
        return int(self._data.currsize)

    @property
    def evictions(self) -> int:
        return self._data.evictions
