"""The per-request context store behind ``get_request_context()``: bounded in bytes and in time.

A request's :class:`~enhanced_llm.metadata.OutputMetadata` holds what the enhancements found out
about its prompt (the NLP analysis, similar questions, the verifier's verdict and the candidate
question): text derived from people's prompts. It stays readable while the request runs and for
``ttl`` seconds after, in an LRU that counts the bytes each entry holds (``max_bytes``), so a
burst of requests cannot make it grow past its bound, however long their prompts.

The metadata fills in while the request runs, so the engine puts it again when something lands
(:meth:`RequestContexts.put`): its size is counted anew each time.
"""

from __future__ import annotations

import sys
import threading
from typing import Any

from cachetools import TTLCache

__all__ = ["RequestContexts", "plain_bytes"]

# What one entry costs beyond its key and value: the TTLCache's dict slots and linked-list nodes
# and the stored (value, size) pair (measured against tracemalloc in tests/test_request_contexts.py).
_ENTRY_OVERHEAD = 200


def plain_bytes(obj: Any) -> int:
    """Bytes a tree of plain data holds: dicts, lists, tuples, sets, strings, numbers, and objects
    with ``__slots__`` (each object counted once; shared singletons such as None, True and small
    ints are free, and so are string keys of dicts: field names, literals every entry shares)."""
    seen: set[int] = set()
    stack = [obj]
    total = 0
    while stack:
        o = stack.pop()
        if o is None or o is True or o is False or id(o) in seen:
            continue
        if isinstance(o, int) and -5 <= o <= 256:
            continue
        seen.add(id(o))
        total += sys.getsizeof(o)
        if isinstance(o, dict):
            stack.extend(k for k in o if not isinstance(k, str))
            stack.extend(o.values())
        elif isinstance(o, (list, tuple, set, frozenset)):
            stack.extend(o)
        elif hasattr(type(o), "__slots__") and not isinstance(o, (str, bytes, int, float)):
            stack.extend(getattr(o, name, None) for name in type(o).__slots__)
    return total


class RequestContexts:
    """request id -> its metadata, for ``ttl`` seconds after the last put, at most ``max_bytes``."""

    def __init__(self, max_bytes: int, ttl: float) -> None:
        self._cache: TTLCache[str, tuple[Any, int]] = TTLCache(maxsize=max(1, max_bytes), ttl=ttl, getsizeof=lambda item: item[1])
        self._lock = threading.Lock()
        self.refused = 0  #: metadata larger than an eighth of the bound: not kept

    def put(self, request_id: str, meta: Any) -> None:
        """Keep (or re-count) ``meta`` under ``request_id``; the least recently put goes first."""
        size = sys.getsizeof(request_id) + plain_bytes(meta) + _ENTRY_OVERHEAD
        with self._lock:
            if size > self._cache.maxsize // 8:
                self._cache.pop(request_id, None)
                self.refused += 1
                return
            self._cache[request_id] = (meta, size)

    def get(self, request_id: str) -> Any | None:
        with self._lock:
            item = self._cache.get(request_id)
        return None if item is None else item[0]

    def usage(self) -> dict[str, int]:
        with self._lock:
            return {"bytes": int(self._cache.currsize), "entries": len(self._cache),
                    "bytes_bound": int(self._cache.maxsize), "refused": self.refused}
