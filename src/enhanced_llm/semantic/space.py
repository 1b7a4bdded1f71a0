"""One embedding model's vector space: its embedder, its index, its Redis namespace and their sync.

Vectors of different models are never compared: :class:`~.search.SemanticCache`
keeps one :class:`VectorSpace` per configured model, and each space has its own
:class:`~.index.VectorIndex` and its own Redis namespace
(``{key_prefix}{model}:{dimension}:``), so a replica configured with another
model neither reads nor overwrites these vectors.

The space also carries the model's decision scale: the cosine ``threshold`` a
candidate needs and the ambiguity ``margin`` (e5 similarities sit much higher
than MiniLM's, so one number cannot serve both).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import Any, Callable

import numpy as np

from enhanced_llm.errors import CacheBackendError
from enhanced_llm.semantic.embedders import BaseEmbedder
from enhanced_llm.semantic.index import VectorIndex
from enhanced_llm.semantic.store import SemanticStore
from enhanced_llm.semantic.verifier import analysis

__all__ = ["VectorSpace"]

log = logging.getLogger(__name__)


class VectorSpace:
    """An embedder with its index and (optionally) its Redis store, kept in step with other replicas."""

    def __init__(self, embedder: BaseEmbedder, config: Any, *, margin: float | None = None, errors: Any) -> None:
        self.embedder = embedder
        self.config = config
        self._margin = margin
        self.index: VectorIndex | None = None
        self.store: SemanticStore | None = None
        self._errors = errors  # the cache's error Counter
        self._sync_task: asyncio.Task[None] | None = None
        self._running = False
        #: The last hydration from Redis: entries read, seconds it took, whether it completed.
        self.hydration: dict[str, Any] = {}

    def _config_scale(self) -> bool:
        """Do ``similarity_threshold`` / ``ambiguity_margin`` apply to this model? For sentence-transformers
        models (their defaults were calibrated on MiniLM); other models have their own scale."""
        return self.embedder.family.startswith("st:")

    @property
    def threshold(self) -> float:
        """``model_thresholds[model name]``, else ``similarity_threshold`` for sentence-transformers models,
        else the model's calibrated default (read from the config each time: it may change at run time)."""
        named = (getattr(self.config, "model_thresholds", None) or {}).get(self.embedder.model_name)
        if named is not None:
            return float(named)
        if self._config_scale():
            return float(self.config.similarity_threshold)
        return self.embedder.default_threshold

    @property
    def margin(self) -> float:
        """The ambiguity margin: the caller's, else ``ambiguity_margin`` for sentence-transformers models,
        else the model's calibrated one."""
        if self._margin is not None:
            return self._margin
        if self._config_scale():
            return float(getattr(self.config, "ambiguity_margin", 0.02))
        return self.embedder.default_margin

    def word_similarity(self, a: str, b: str) -> float | None:
        """Cosine of two words under this space's model, from vectors already cached (None otherwise:
        this runs inside the verifier, on the event loop, and never calls the model)."""
        va, vb = self.embedder.cached_vector(a), self.embedder.cached_vector(b)
        if va is None or vb is None:
            return None
        return float(np.dot(va, vb))

    @property
    def namespace(self) -> str:
        """This model's part of the Redis key prefix (the historical MiniLM slug is kept as it was)."""
        name = self.embedder.model_name if self.embedder.family.startswith("st:") else self.embedder.family
        return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)

    async def start(
        self, config: Any, *, on_evict: Callable[[list[str]], None], redis: Any, key_prefix: str,
        redis_timeout: float, entry_ttl: float | None, sync_interval_ms: int,
    ) -> None:
        await self.embedder.aload()
        limit = getattr(config, "verifier_cache_bytes", None)  # the verifier's cache is one per process
        if limit and analysis.cache_usage()["verifier_cache_bytes_bound"] != limit:
            analysis.set_cache_bytes(limit)
        dim = self.embedder.dimension
        self.index = VectorIndex(
            dim,
            max_entries=config.index_max_entries,
            max_bytes=getattr(config, "index_max_bytes", None),
            max_scopes=getattr(config, "index_max_scopes", None),
            approximate_after=config.approximate_after,
            on_evict=on_evict,
            index_type=getattr(config, "index_type", "ivf"),
            nprobe=getattr(config, "index_nprobe", 32),
        )
        self._running = True
        if redis is not None:
            self.store = SemanticStore(
                redis, f"{key_prefix}{self.namespace}:{dim}:", timeout=redis_timeout, entry_ttl=entry_ttl, dim=dim,
                signing_key=getattr(config, "signing_key", None),
                max_value_bytes=getattr(config, "max_stored_value_bytes", 64 << 10),
            )
            complete = await self._hydrate()
            # An incomplete start (Redis failed midway) is finished by the follower, as after an outage.
            self._sync_task = asyncio.get_running_loop().create_task(
                self._follow(sync_interval_ms, resync=not complete), name=f"semantic-sync-{self.namespace}"
            )

    async def close(self) -> None:
        self._running = False
        if self._sync_task is not None:
            self._sync_task.cancel()
            # Bounded: on Python 3.11 asyncio.wait_for can swallow a cancellation that
            # races a finishing Redis call; the loop below also stops on _running.
            await asyncio.wait([self._sync_task], timeout=2.0)
            self._sync_task = None
        if self.store is not None:
            await self.store.close()
        self.embedder.close()

    @property
    def syncing(self) -> bool:
        return self._sync_task is not None and not self._sync_task.done()

    # -- Redis sync ------------------------------------------------------------------

    async def _hydrate(self, progress: bool = True) -> bool:
        """Read every stored entry into the index; False when Redis failed midway (with ``progress``;
        without it, the error is raised)."""
        assert self.store is not None
        started, entries = time.perf_counter(), 0
        if progress:
            log.info("semantic index: hydrating from Redis (%s)", self.store.ns)
        try:
            async for batch in self.store.hydrate(progress=progress):
                await asyncio.to_thread(self.apply, batch)
                entries += len(batch)
        except Exception as exc:  # noqa: BLE001 - counted by the store; keep what we have
            self.hydration = {"entries": entries, "seconds": time.perf_counter() - started, "complete": False}
            if progress:
                log.warning("semantic index hydration incomplete after %d entries (retried in the background): %r", entries, exc)
                return False
            raise
        self.hydration = {"entries": entries, "seconds": time.perf_counter() - started, "complete": True}
        if progress:
            log.info("semantic index hydrated: %d entries in %.2f s (%s)", entries, self.hydration["seconds"], self.store.ns)
        return True

    def apply(self, entries: list[Any]) -> None:
        """Apply stored entries (additions and removals) to the index."""
        assert self.index is not None
        by_scope: dict[str, list[Any]] = {}
        for e in entries:
            if e.vector is None:
                self.index.remove(e.entry_id)
            elif e.vector.shape[0] != self.index.dim:
                self._errors["dimension_mismatch"] += 1
            else:
                by_scope.setdefault(e.scope, []).append(e)
        for scope, items in by_scope.items():
            self.index.add_many(scope, [(e.entry_id, e.question) for e in items], np.stack([e.vector for e in items]))

    async def _follow(self, block_ms: int, resync: bool = False) -> None:
        """Apply other replicas' changes (and send this replica's failed writes again). A failed or
        timed-out read is retried from the last id read;
        only records trimmed from the stream past that id (checked after an error, and after a full
        read) make it re-hydrate; so does an incomplete start (``resync``: Redis failed midway)."""
        assert self.store is not None
        check_gap = False
        while self._running:
            try:
                if resync:
                    await self._hydrate(progress=False)
                    resync = check_gap = False
                    log.info("semantic index re-hydrated: %d entries in %.2f s (%s)", self.hydration["entries"],
                             self.hydration["seconds"], self.store.ns)
                elif check_gap:
                    if await self.store.missed_changes():
                        self.store.gap_resyncs += 1
                        await self._hydrate(progress=False)
                    check_gap = False
                if self.store.unsent and self.store.available:
                    await self.store.resend()  # this replica's writes that failed reach the others now
                changes = await self.store.changes(block_ms=block_ms)
                if changes:
                    await asyncio.to_thread(self.apply, changes)
                check_gap = self.store.behind
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - Redis faults are counted by the store
                if not isinstance(exc, CacheBackendError):  # anything else is ours: count it too
                    self._errors["follow"] += 1
                    log.warning("semantic index: following the change stream failed: %r", exc)
                check_gap = True
                await asyncio.sleep(self.store.retry_after)

    def stats(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "margin": self.margin,
            "index": self.index.stats() if self.index is not None else {},
            "embedder": self.embedder.stats(),
            "redis": self.store.stats() if self.store is not None else None,
            "hydration": dict(self.hydration),
        }
