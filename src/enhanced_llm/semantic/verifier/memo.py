"""Memo caches of the verifier's word-level helpers, bounded together in bytes.

The verifier compares words and spans of words (stems, lexical evidence, jieba's glued words)
again and again; these helpers remember their answers. What they remember is taken from
people's prompts, so all of them share one LRU bound in bytes (a share of
``SimilarityConfig.verifier_cache_bytes``, set with :func:`set_bytes`); an argument longer than
``max_chars`` is computed each time and never held.
"""

from __future__ import annotations

import functools
import sys
import threading
from typing import Any, Callable, TypeVar

from cachetools import LRUCache

__all__ = ["memo", "set_bytes", "usage", "clear"]

F = TypeVar("F", bound=Callable[..., Any])

WORD_CACHE_BYTES = 2 << 20
# One entry beyond its key and value: the LRU's dict slots and order node (cachetools keeps three
# dicts), the key tuple and the stored (value, size) pair; measured against tracemalloc in
# tests/test_semantic_hardening.py.
_ENTRY_OVERHEAD = 360

_lock = threading.Lock()
_cache: LRUCache[tuple[Any, ...], tuple[Any, int]] = LRUCache(maxsize=WORD_CACHE_BYTES, getsizeof=lambda item: item[1])
_MISSING = object()


def _value_bytes(value: Any) -> int:
    if isinstance(value, tuple):
        return sys.getsizeof(value) + sum(sys.getsizeof(v) for v in value)
    return 0 if value is None or isinstance(value, bool) else sys.getsizeof(value)


def memo(max_chars: int = 64) -> Callable[[F], F]:
    """Remember a pure function of strings in the shared byte-bounded LRU."""

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def cached(*args: str) -> Any:
            if sum(len(a) for a in args) > max_chars:
                return fn(*args)
            key = (fn.__qualname__, *args)
            with _lock:
                hit = _cache.get(key, _MISSING)
            if hit is not _MISSING:
                return hit[0]
            value = fn(*args)
            size = _ENTRY_OVERHEAD + sum(sys.getsizeof(a) for a in args) + _value_bytes(value)
            with _lock:
                _cache[key] = (value, size)
            return value

        return cached  # type: ignore[return-value]

    return wrap


def set_bytes(limit: int) -> None:
    """Bound the word caches to ``limit`` bytes (drops what they hold)."""
    global _cache
    with _lock:
        _cache = LRUCache(maxsize=max(1, limit), getsizeof=lambda item: item[1])


def clear() -> None:
    with _lock:
        _cache.clear()


def usage() -> dict[str, int]:
    with _lock:
        return {"word_cache_bytes": int(_cache.currsize), "word_cache_entries": len(_cache),
                "word_cache_bytes_bound": int(_cache.maxsize)}
