"""The semantic cache facade the engine calls.

:class:`SemanticCache` joins the :class:`~.embedder.Embedder`, the scoped
:class:`~.index.VectorIndex`, the rule-based :class:`~.verifier.Verifier` and,
when Redis is configured, the :class:`~.store.SemanticStore`:

* ``lookup(scope, text)``: embed, take the nearest stored questions of that
  scope, keep those at or above ``similarity_threshold`` and accepted by the
  verifier. Accepted entries within the ambiguity margin of the nearest are
  ranked by cosine + ``lexical_weight`` x content-word overlap with the query;
  if the two best still lie within the margin of each other the query is
  ambiguous (two cached answers fit equally well) and nothing is served.
  Otherwise the best one is a :class:`SemanticMatch` whose ``entry_id`` is the
  exact-cache key to serve.
* The margin is ``config.ambiguity_margin`` for a best score near 1.0 and grows
  linearly to ``adaptive_margin`` (3) times that at the threshold: cosine is
  noisier far from 1.0. ``lexical_weight`` (0.2) and ``adaptive_margin`` (3)
  were picked by a small sweep on GPTCache's mock data and the first 10k QQP
  pairs and checked on QQP pairs 20,000-29,999 (see benchmarks/).
* Two stored questions with the same text and different entry ids always tie:
  the cache holds two answers to one question and serves neither. The same
  holds for two stored questions with the same content words (only function
  words, inflection or order differ) that both pass the verifier
  ("duplicate_entries"): it costs a hit, never serves a wrong answer. (A cache
  keyed by prompt cannot normally hold that; GPTCache's mock data does, and
  its protocol counts only one of the two ids as correct.)
* ``config.min_coverage`` goes to the verifier; ``config.index_type``
  (``"ivf"``, ``"hnsw"`` or ``"flat"``; default ``"ivf"``) and
  ``config.index_nprobe`` (default 32) to the index, when the config has them.
* ``add`` / ``remove`` keep the index (and Redis) in step with the cache.
* ``search`` / ``batch_search``: plain similarity search for the handler
  (threshold applied, verifier not).

Nothing raised by the model, FAISS or Redis escapes: lookups fail open
(``None`` / empty results) and every failure is counted in :meth:`stats`.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from enhanced_llm.semantic.embedder import Embedder
from enhanced_llm.semantic.index import Candidate, VectorIndex
from enhanced_llm.semantic.store import SemanticStore
from enhanced_llm.semantic.verifier import Verdict, Verifier, lexical_overlap

__all__ = ["SemanticMatch", "SemanticCache", "SimilaritySearchHelper"]

log = logging.getLogger(__name__)

_EPS = 1e-5  # float noise: a score equal to the threshold passes


@dataclass(frozen=True, slots=True)
class SemanticMatch:
    """A cached question that may answer the query."""

    entry_id: str
    question: str
    similarity: float
    verdict: Verdict
    scope: str = ""


class SemanticCache:
    """Semantic response cache and similarity search over cached questions.

    ``config`` is an :class:`enhanced_llm.config.SimilarityConfig` (defaults when
    None). ``redis`` is a ``redis.asyncio.Redis`` (``decode_responses=False``) or a
    URL; without it the index lives in this process only. ``on_evict`` receives
    the entry ids the index dropped to stay within ``index_max_entries`` (called
    from a worker thread).
    """

    def __init__(
        self,
        config: Any = None,
        *,
        redis: Any = None,
        key_prefix: str = "ellm:sem:",
        redis_timeout: float = 0.25,
        entry_ttl: float | None = None,
        on_evict: Callable[[list[str]], None] | None = None,
        embedder: Embedder | None = None,
        verifier: Verifier | None = None,
        ambiguity_margin: float | None = None,
        lexical_weight: float = 0.2,
        adaptive_margin: float = 3.0,
        candidates: int = 8,
        sync_interval_ms: int = 1000,
    ) -> None:
        if config is None:
            from enhanced_llm.config import SimilarityConfig

            config = SimilarityConfig()
        self.config = config
        self.embedder = embedder or Embedder(
            config.embedding_model,
            device=config.embedding_device,
            batch_window_ms=config.batch_window_ms,
            max_batch_size=config.max_batch_size,
            backend=getattr(config, "embedding_backend", "auto"),
            threads=getattr(config, "embedding_threads", 1),
        )
        self.verifier = verifier or Verifier(
            text_info=self.embedder.text_info, min_coverage=getattr(config, "min_coverage", 0.9)
        )
        self.ambiguity_margin = getattr(config, "ambiguity_margin", 0.02) if ambiguity_margin is None else ambiguity_margin
        self.lexical_weight = lexical_weight
        self.adaptive_margin = adaptive_margin
        self.candidates = max(2, candidates)
        self.sync_interval_ms = sync_interval_ms
        self.on_evict = on_evict
        self._redis = redis
        self._key_prefix = key_prefix
        self._redis_timeout = redis_timeout
        self._entry_ttl = entry_ttl
        self.index: VectorIndex | None = None
        self.store: SemanticStore | None = None
        self._sync_task: asyncio.Task[None] | None = None
        self._started = False
        # Stats.
        self.lookups = 0
        self.hits = 0
        self.misses = 0
        self.timeouts = 0
        self.rejections: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.similarity_buckets: Counter[str] = Counter()
        self.adds = 0
        self.hit_seconds = 0.0

    # -- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        """Load the model, build the index, hydrate it from Redis and follow other replicas."""
        if self._started:
            return
        await self.embedder.aload()
        dim = self.embedder.dimension
        want = getattr(self.config, "vector_dimension", None)
        if want and want != dim:
            log.warning("vector_dimension=%s but %s produces %s; using %s", want, self.config.embedding_model, dim, dim)
        self.index = VectorIndex(
            dim,
            max_entries=self.config.index_max_entries,
            approximate_after=self.config.approximate_after,
            on_evict=self._evicted,
            index_type=getattr(self.config, "index_type", "ivf"),
            nprobe=getattr(self.config, "index_nprobe", 32),
        )
        if self._redis is not None:
            slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", self.config.embedding_model)
            self.store = SemanticStore(
                self._redis, f"{self._key_prefix}{slug}:{dim}:", timeout=self._redis_timeout, entry_ttl=self._entry_ttl
            )
            await self._hydrate()
            self._sync_task = asyncio.get_running_loop().create_task(self._follow(), name="semantic-sync")
        self._started = True

    async def close(self) -> None:
        """Stop following Redis and release the worker thread."""
        self._started = False
        if self._sync_task is not None:
            self._sync_task.cancel()
            # Bounded: on Python 3.11 asyncio.wait_for can swallow a cancellation that
            # races a finishing Redis call; the loop below also stops on _started.
            await asyncio.wait([self._sync_task], timeout=2.0)
            self._sync_task = None
        if self.store is not None:
            await self.store.close()
        self.embedder.close()

    async def __aenter__(self) -> "SemanticCache":
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    @property
    def enabled(self) -> bool:
        return self._started and bool(getattr(self.config, "enable_semantic_cache", True))

    # -- the cache -----------------------------------------------------------------

    async def lookup(
        self, scope: str, text: str, nlp: Any = None, *, timeout: float | None = None, report: dict | None = None
    ) -> SemanticMatch | None:
        """Best verified cached question of ``scope`` for ``text``, or None.

        Gives up after ``timeout`` (default ``config.lookup_timeout``) seconds. When a
        ``report`` dict is given, a refusal is described in it (``accepted``, ``reason``,
        ``question``, ``similarity`` of the nearest candidate) for the request's metadata.
        """
        if not self.enabled:
            return None
        self.lookups += 1
        t0 = time.perf_counter()
        try:
            match = await asyncio.wait_for(self._lookup(scope, text, nlp, report), timeout or self.config.lookup_timeout)
        except TimeoutError:
            self.timeouts += 1
            if report is not None:
                report.update(accepted=False, reason="timeout")
            match = None
        except Exception as exc:  # noqa: BLE001 - fail open
            self.errors[type(exc).__name__] += 1
            log.warning("semantic lookup failed: %r", exc)
            match = None
        if match is None:
            self.misses += 1
        else:
            self.hits += 1
            self.hit_seconds += time.perf_counter() - t0
        return match

    async def _lookup(self, scope: str, text: str, nlp: Any, report: dict | None = None) -> SemanticMatch | None:
        assert self.index is not None
        vec = await self.embedder.embed(text)
        cands = await asyncio.to_thread(self.index.search, scope, vec, self.candidates)
        if cands:
            self.similarity_buckets[_bucket(cands[0].score)] += 1
        return self.choose(text, cands, nlp, report)

    def choose(
        self, text: str, cands: list[Candidate], nlp: Any = None, report: dict | None = None
    ) -> SemanticMatch | None:
        """Apply threshold, verifier and ambiguity rule to search results (sorted by score).

        Candidates within ``ambiguity_margin`` of the nearest one that the verifier accepts are
        ranked by cosine plus ``lexical_weight`` times their content-word overlap with ``text``;
        if the two best still lie within the margin of each other, nothing is served. Two stored
        questions with the same text but different answers (entry ids) therefore always tie:
        the cache holds conflicting answers to one question and does not guess between them.
        The same holds beyond the margin: if another stored question at or above the threshold
        uses the same content words as the chosen one (``Verifier.same_question``: only function
        words, inflection or word order differ) and the verifier accepts it too, it is the same
        question stored under a second answer, and nothing is served ("duplicate_entries").
        """
        threshold = self.config.similarity_threshold - _EPS
        margin = self._margin(cands[0].score) if cands else self.ambiguity_margin
        accepted: list[tuple[Candidate, Verdict]] = []
        seen: set[str] = set()
        first_reason = ""
        for c in cands:
            if c.score < threshold:
                break
            if accepted and c.score < accepted[0][0].score - margin:
                break
            if c.entry_id in seen:
                continue
            seen.add(c.entry_id)
            verdict = self.verifier.verify(text, c.question, nlp)
            if not verdict.accepted:
                first_reason = first_reason or verdict.reason
                if not accepted:
                    # The nearest question differs in a way that matters; a farther one is
                    # not served in its place (on paraphrase data that mostly adds wrong hits).
                    break
                continue
            accepted.append((c, verdict))
        if not accepted:
            reason = first_reason or ("below_threshold" if cands and cands[0].score < threshold else "")
            if reason:
                self.rejections[reason] += 1
            if report is not None and cands:
                report.update(accepted=False, reason=reason, question=cands[0].question, similarity=min(1.0, cands[0].score))
            return None
        best, verdict = accepted[0]
        if len(accepted) > 1:
            ranked = sorted(
                ((c.score + self.lexical_weight * lexical_overlap(text, c.question), c, v) for c, v in accepted),
                key=lambda t: t[0],
                reverse=True,
            )
            if ranked[0][0] - ranked[1][0] < margin:
                # Two different entries fit about as well: don't guess.
                self.rejections["ambiguous"] += 1
                if report is not None:
                    report.update(accepted=False, reason="ambiguous", question=best.question, similarity=min(1.0, best.score))
                return None
            _, best, verdict = ranked[0]
        verified = {c.entry_id for c, _ in accepted}
        for c in cands:
            if c.score < threshold:
                break
            if c.entry_id == best.entry_id or not self.verifier.same_question(best.question, c.question):
                continue
            if c.entry_id in verified or (c.entry_id not in seen and self.verifier.verify(text, c.question, nlp).accepted):
                # One question stored twice with different answers: don't pick one of them.
                self.rejections["duplicate_entries"] += 1
                if report is not None:
                    report.update(
                        accepted=False, reason="duplicate_entries", question=best.question, similarity=min(1.0, best.score)
                    )
                return None
        if self.index is not None:
            self.index.touch(best.entry_id)
        return SemanticMatch(best.entry_id, best.question, best.score, verdict, best.scope)

    def _margin(self, best: float) -> float:
        """The ambiguity margin at a best score of ``best``: ``ambiguity_margin`` near 1.0, growing
        linearly to ``adaptive_margin`` times that at the threshold (scores far from 1.0 are noisier,
        so a tie must be broken by a wider gap)."""
        t = self.config.similarity_threshold
        if self.adaptive_margin <= 1 or t >= 1:
            return self.ambiguity_margin
        closeness = min(1.0, max(0.0, (best - t) / (1 - t)))
        return self.ambiguity_margin * (self.adaptive_margin - (self.adaptive_margin - 1) * closeness)

    async def add(self, scope: str, text: str, entry_id: str) -> bool:
        """Index ``text`` (a question whose answer is cached under ``entry_id``) in ``scope``."""
        if not self._started or self.index is None:
            return False
        try:
            vec = await self.embedder.embed(text)
            await asyncio.to_thread(self.index.add, scope, entry_id, text, vec)
        except Exception as exc:  # noqa: BLE001 - fail open
            self.errors[type(exc).__name__] += 1
            log.warning("semantic add failed: %r", exc)
            return False
        self.adds += 1
        if self.store is not None:
            await self.store.put(entry_id, scope, text, vec)
        return True

    async def remove(self, entry_id: str) -> bool:
        """Forget ``entry_id`` here and (when configured) in Redis."""
        if self.index is None:
            return False
        try:
            found = await asyncio.to_thread(self.index.remove, entry_id)
        except Exception as exc:  # noqa: BLE001
            self.errors[type(exc).__name__] += 1
            return False
        if self.store is not None:
            await self.store.delete(entry_id)
        return found

    # -- similarity search -----------------------------------------------------------

    async def search(self, text: str, k: int | None = None, scope: str | None = None) -> list[dict[str, Any]]:
        """Stored questions similar to ``text`` (at or above the threshold, unverified).

        ``scope=None`` searches every scope. Returns at most ``k`` (default
        ``max_similar_results``) dicts ``{question, similarity, entry_id}``, best first,
        de-duplicated by entry id and question.
        """
        return (await self.batch_search([text], k, scope))[0]

    async def batch_search(
        self, texts: list[str], k: int | None = None, scope: str | None = None
    ) -> list[list[dict[str, Any]]]:
        """:meth:`search` for several texts (one embedding batch, one FAISS call per scope)."""
        k = self.config.max_similar_results if k is None else k
        empty: list[list[dict[str, Any]]] = [[] for _ in texts]
        if not texts or k <= 0 or not self._started or self.index is None:
            return empty
        if not getattr(self.config, "enable_vector_search", True):
            return empty
        try:
            vecs = await self.embedder.embed_many(list(texts))
            rows = await asyncio.to_thread(self.index.search_many, scope, vecs, k * 2)
        except Exception as exc:  # noqa: BLE001 - fail open
            self.errors[type(exc).__name__] += 1
            return empty
        threshold = self.config.similarity_threshold - _EPS
        out = []
        for row in rows:
            seen: set[str] = set()
            items = []
            for c in row:
                if c.score < threshold or c.entry_id in seen or c.question in seen:
                    continue
                seen.update((c.entry_id, c.question))
                items.append({"question": c.question, "similarity": min(1.0, c.score), "entry_id": c.entry_id})
                if len(items) >= k:
                    break
            out.append(items)
        return out

    # -- Redis sync ------------------------------------------------------------------

    async def _hydrate(self) -> None:
        assert self.store is not None and self.index is not None
        try:
            async for batch in self.store.hydrate():
                await asyncio.to_thread(self._apply, batch)
        except Exception as exc:  # noqa: BLE001 - counted by the store; keep what we have
            log.warning("semantic index hydration incomplete: %r", exc)

    def _apply(self, entries: list[Any]) -> None:
        assert self.index is not None
        by_scope: dict[str, list[Any]] = {}
        for e in entries:
            if e.vector is None:
                self.index.remove(e.entry_id)
            elif e.vector.shape[0] != self.index.dim:
                self.errors["dimension_mismatch"] += 1
            else:
                by_scope.setdefault(e.scope, []).append(e)
        for scope, items in by_scope.items():
            self.index.add_many(scope, [(e.entry_id, e.question) for e in items], np.stack([e.vector for e in items]))

    async def _follow(self) -> None:
        """Apply other replicas' changes; after an outage, re-hydrate."""
        assert self.store is not None
        resync = False
        while self._started:
            try:
                if resync:
                    await self._hydrate_checked()
                    resync = False
                changes = await self.store.changes(block_ms=self.sync_interval_ms)
                if changes:
                    await asyncio.to_thread(self._apply, changes)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - counted by the store
                resync = True
                await asyncio.sleep(self.store.retry_after)

    async def _hydrate_checked(self) -> None:
        assert self.store is not None
        async for batch in self.store.hydrate(progress=False):
            await asyncio.to_thread(self._apply, batch)

    def _evicted(self, entry_ids: list[str]) -> None:
        if self.on_evict is not None:
            try:
                self.on_evict(entry_ids)
            except Exception as exc:  # noqa: BLE001
                self.errors["on_evict"] += 1
                log.warning("on_evict callback failed: %r", exc)

    # -- reporting ---------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        index = self.index.stats() if self.index is not None else {}
        return {
            "lookups": self.lookups,
            "semantic_hits": self.hits,
            "misses": self.misses,
            "timeouts": self.timeouts,
            "hit_latency_mean_ms": (1000 * self.hit_seconds / self.hits) if self.hits else 0.0,
            "rejections": dict(self.rejections),
            "similarity_histogram": dict(sorted(self.similarity_buckets.items())),
            "adds": self.adds,
            "errors": dict(self.errors),
            "index": index,
            "embedder": self.embedder.stats(),
            "redis": self.store.stats() if self.store is not None else None,
        }

    def health(self) -> dict[str, Any]:
        return {
            "started": self._started,
            "model_loaded": self.embedder.stats()["loaded"],
            "index_entries": len(self.index) if self.index is not None else 0,
            "redis": None if self.store is None else ("ok" if self.store.available else "down"),
            "sync_running": self._sync_task is not None and not self._sync_task.done(),
        }


class SimilaritySearchHelper(SemanticCache):
    """The name the design documents use; same object as :class:`SemanticCache`."""


def _bucket(score: float) -> str:
    """Best-candidate similarity in 0.05-wide buckets, e.g. "0.85-0.90"."""
    lo = min(19, max(0, int(score * 20))) / 20
    return f"{lo:.2f}-{lo + 0.05:.2f}"
