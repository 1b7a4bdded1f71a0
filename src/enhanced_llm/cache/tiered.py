"""The exact cache: memory (L1) then Redis (L2), promotion, fail-open, statistics.

Contract: no method raises because of a cache problem. A Redis failure, a busy
pool, or a value that fails its envelope (corrupt, foreign, unsigned, oversized)
is counted and treated as a miss; a refused value is deleted; the request goes on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Literal

from ..config import CacheConfig
from ..errors import CacheBackendError, CorruptEntryError
from .entry import CacheEntry, EntryCodec
from .envelope import BadSignatureError, OversizedEntryError
from .memory import MemoryCache
from .redis_client import redis_client_from_config
from .redis_store import RedisBusy, RedisStore

__all__ = ["TieredCache", "CacheStats", "CacheLevel"]

logger = logging.getLogger(__name__)

CacheLevel = Literal["memory", "redis"]

_THREAD_DECODE_BYTES = 256 << 10


@dataclass
class CacheStats:
    """Counters of the exact cache (monotonic since start)."""

    hits_memory: int = 0
    hits_redis: int = 0
    hits_semantic: int = 0
    misses: int = 0
    stores: int = 0
    store_skipped: int = 0
    evictions: int = 0
    redis_errors: int = 0
    redis_busy: int = 0
    """Lookups/writes skipped because no pooled connection was free in time (not a Redis failure)."""
    corrupt_entries: int = 0
    """Redis values refused (any reason below, or undecodable/foreign/old): misses, deleted."""
    bad_signatures: int = 0
    """Refused: signing is on and the value is unsigned or its HMAC does not verify."""
    oversized_entries: int = 0
    """Refused on read, or not written, because longer than max_value_bytes (wire or decompressed)."""
    coalesced: int = 0
    bypassed: int = 0
    uncacheable: int = 0
    time_saved_s: float = 0.0
    tokens_saved: int = 0

    def as_dict(self) -> dict[str, float | int]:
        d = asdict(self)
        # misses counts exact misses, including those the semantic cache then answered
        lookups = self.hits_memory + self.hits_redis + self.coalesced + self.misses
        hits = self.hits_memory + self.hits_redis + self.coalesced + self.hits_semantic
        d["hit_rate"] = hits / lookups if lookups else 0.0
        return d


class TieredCache:
    """Exact-match answers by key, in memory and/or Redis according to ``CacheConfig.cache_type``."""

    def __init__(self, config: CacheConfig, redis_client=None) -> None:
        self.config = config
        self.stats = CacheStats()
        self.codec = EntryCodec(
            config.enable_compression, config.compression_min_bytes,
            signing_key=config.signing_key_bytes, max_bytes=config.max_value_bytes,
        )
        self._eviction_listeners: list[Callable[[str, CacheEntry], None]] = []
        self.memory: MemoryCache | None = None
        if config.uses_memory:
            self.memory = MemoryCache(config.memory_cache_size, config.memory_cache_bytes, config.ttl, self._on_evict)
        self.redis: RedisStore | None = None
        if config.uses_redis:
            client = redis_client or redis_client_from_config(config)
            self.redis = RedisStore(
                client, config.key_prefix, config.redis_timeout, config.redis_retry_after,
                pool_timeout=config.redis_pool_timeout, max_value_bytes=config.max_value_bytes,
            )
        self._writes: set[asyncio.Task] = set()

    # -- lookups -----------------------------------------------------------------------------

    def get_memory(self, key: str) -> CacheEntry | None:
        """Level 1 only (synchronous); counts a hit, not a miss."""
        entry = self.memory.get(key) if self.memory is not None else None
        if entry is not None:
            self.stats.hits_memory += 1
        return entry

    async def get_redis(self, key: str) -> CacheEntry | None:
        """Level 2 only, promoting a hit to memory; counts a hit, not a miss."""
        entry = await self._get_redis(key) if self.redis is not None else None
        if entry is not None:
            self.stats.hits_redis += 1
        return entry

    def count_miss(self) -> None:
        self.stats.misses += 1

    async def get(self, key: str) -> tuple[CacheEntry, CacheLevel] | None:
        """Both levels: the entry and the level that had it, or None (counted as a miss)."""
        if (entry := self.get_memory(key)) is not None:
            return entry, "memory"
        if (entry := await self.get_redis(key)) is not None:
            return entry, "redis"
        self.count_miss()
        return None

    async def get_quiet(self, key: str) -> CacheEntry | None:
        """Like :meth:`get` without counting a hit or miss (semantic candidates, sub-questions)."""
        if self.memory is not None and (entry := self.memory.get(key)) is not None:
            return entry
        if self.redis is not None:
            return await self._get_redis(key)
        return None

    async def _get_redis(self, key: str) -> CacheEntry | None:
        assert self.redis is not None
        if not self.redis.available:
            return None
        try:
            data = await self.redis.get(key)
        except RedisBusy as exc:
            self.stats.redis_busy += 1
            logger.debug("L2 get skipped: %s", exc)
            return None
        except CacheBackendError as exc:
            self.stats.redis_errors += 1
            logger.debug("L2 get failed: %s", exc)
            return None
        if data is None:
            return None
        try:
            if len(data) > _THREAD_DECODE_BYTES:  # large values decompress off the event loop
                entry = await asyncio.to_thread(self.codec.decode, data, key)
            else:
                entry = self.codec.decode(data, key)
        except CorruptEntryError as exc:
            self._count_refused(exc)
            logger.warning("dropping refused cache value for %s: %s", key, exc)
            self._spawn(self._delete_redis(key))
            return None
        if self.memory is not None:  # promote
            self.memory.set(key, entry)
        return entry

    def _count_refused(self, exc: CorruptEntryError) -> None:
        self.stats.corrupt_entries += 1
        if isinstance(exc, BadSignatureError):
            self.stats.bad_signatures += 1
        elif isinstance(exc, OversizedEntryError):
            self.stats.oversized_entries += 1

    # -- writes ------------------------------------------------------------------------------

    def put(self, entry: CacheEntry) -> None:
        """Store in memory now and in Redis in the background (see :meth:`flush`)."""
        if self.memory is not None:
            self.memory.set(entry.key, entry)
        if self.redis is not None:
            data = self.codec.encode(entry)
            if len(data) > self.codec.max_bytes:  # it would be refused on read
                self.stats.oversized_entries += 1
            else:
                self._spawn(self._put_redis(entry.key, data))
        self.stats.stores += 1

    async def _put_redis(self, key: str, data: bytes) -> None:
        assert self.redis is not None
        try:
            await self.redis.set(key, data, self.config.ttl)
        except RedisBusy as exc:
            self.stats.redis_busy += 1
            logger.debug("L2 set skipped: %s", exc)
        except CacheBackendError as exc:
            self.stats.redis_errors += 1
            logger.debug("L2 set failed: %s", exc)

    async def delete(self, key: str) -> None:
        if self.memory is not None:
            self.memory.delete(key)
        if self.redis is not None:
            await self._delete_redis(key)

    async def _delete_redis(self, key: str) -> None:
        assert self.redis is not None
        try:
            await self.redis.delete(key)
        except RedisBusy:
            self.stats.redis_busy += 1
        except CacheBackendError:
            self.stats.redis_errors += 1

    def clear_memory(self) -> None:
        if self.memory is not None:
            self.memory.clear()

    # -- housekeeping ------------------------------------------------------------------------

    def add_eviction_listener(self, listener: Callable[[str, CacheEntry], None]) -> None:
        """Called with (key, entry) when memory drops an entry that Redis does not also hold."""
        self._eviction_listeners.append(listener)

    def _on_evict(self, key: str, entry: CacheEntry) -> None:
        self.stats.evictions += 1
        if self.redis is None:  # with Redis the entry lives on there
            for listener in self._eviction_listeners:
                listener(key, entry)

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def flush(self) -> None:
        """Wait for background Redis writes to finish."""
        while self._writes:
            await asyncio.gather(*list(self._writes), return_exceptions=True)

    async def health(self) -> dict[str, object]:
        result: dict[str, object] = {}
        if self.memory is not None:
            result["memory"] = {"status": "healthy", "entries": len(self.memory), "bytes": self.memory.nbytes}
        if self.redis is not None:
            ok = await self.redis.ping()
            result["redis"] = {"status": "healthy" if ok else "unhealthy", "errors": self.stats.redis_errors}
        return result

    def snapshot(self) -> dict[str, object]:
        d = self.stats.as_dict()
        d["cache_type"] = self.config.cache_type.value
        if self.memory is not None:
            d["memory_entries"] = len(self.memory)
            d["memory_bytes"] = self.memory.nbytes
        return d

    async def close(self) -> None:
        await self.flush()
        if self.redis is not None:
            await self.redis.close()
