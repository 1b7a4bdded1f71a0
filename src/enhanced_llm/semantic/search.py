"""The semantic cache facade the engine calls.

:class:`SemanticCache` joins the embedders (:mod:`.embedders`), the scoped
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
* Two stored questions with the same text (or the same content words) and different entry ids that
  both pass the verifier are one question with two answers: neither is served ("duplicate_entries").
* Several embedding models may be configured (``embedding_model="auto"`` or
  ``"A|B"``): each text goes to the first model that can represent it, and each
  model is its own :class:`~.space.VectorSpace` (index, Redis namespace,
  threshold and margin): vectors of different models are never compared.
* A candidate of another scope than the query's is dropped (``scope_mismatch``; the engine re-checks the answer's).
* A text longer than its model reads is refused: not embedded, indexed or written (``refused_long``).
* ``add`` / ``remove`` keep the index (and Redis) in step; ``search`` / ``batch_search``: plain
  similarity search (threshold applied, verifier not). Search and verification run in threads.

Nothing raised by the model, FAISS or Redis escapes: lookups fail open
(``None`` / empty results) and every failure is counted in :meth:`stats`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from enhanced_llm.semantic.embedders import BACKGROUND, LOOKUP, BaseEmbedder, EmbedderRouter, make_embedders
from enhanced_llm.semantic.index import Candidate, VectorIndex
from enhanced_llm.semantic.space import VectorSpace
from enhanced_llm.semantic.store import SemanticStore
from enhanced_llm.semantic.verifier import Verdict, Verifier, lexical_overlap, words_to_embed

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
        embedder: BaseEmbedder | None = None,
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
        embedders = [embedder] if embedder is not None else make_embedders(config)
        self.router = EmbedderRouter(embedders, min_coverage=getattr(config, "min_coverage", 0.9))
        self.embedder: BaseEmbedder = self.router.primary
        self.verifier = verifier or Verifier(text_info=self._text_info, min_coverage=getattr(config, "min_coverage", 0.9),
                                             generalise=getattr(config, "verify_content_words", True),
                                             content_scope=getattr(config, "content_scope", "slots"))
        self.errors: Counter[str] = Counter()
        self.spaces = [VectorSpace(e, config, margin=ambiguity_margin, errors=self.errors) for e in embedders]
        self.lexical_weight = lexical_weight
        self.adaptive_margin = adaptive_margin
        self.candidates = max(2, candidates)
        self.sync_interval_ms = sync_interval_ms
        self.on_evict = on_evict
        self._redis = redis
        self._key_prefix = key_prefix
        self._redis_timeout = redis_timeout
        self._entry_ttl = entry_ttl
        self._started = False
        # Stats.
        self.lookups = 0
        self.hits = 0
        self.misses = 0
        self.timeouts = 0
        self.rejections: Counter[str] = Counter()
        self.similarity_buckets: Counter[str] = Counter()
        self.adds = 0
        self.refused_long = 0
        self.hit_seconds = 0.0

    @property
    def ambiguity_margin(self) -> float:
        return self.spaces[0].margin

    @property
    def index(self) -> VectorIndex | None:
        """The first model's index (the only one unless several models are configured)."""
        return self.spaces[0].index

    @index.setter
    def index(self, value: VectorIndex | None) -> None:
        self.spaces[0].index = value

    @property
    def store(self) -> SemanticStore | None:
        return self.spaces[0].store

    def space_of(self, text: str) -> VectorSpace:
        """The vector space (model) ``text`` belongs to."""
        emb = self.router.route(text)
        return next(s for s in self.spaces if s.embedder is emb)

    def _text_info(self, text: str) -> Any:
        return self.router.route(text).text_info(text)

    # -- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        """Load the models, build the indexes, hydrate them from Redis and follow other replicas."""
        if self._started:
            return
        want = getattr(self.config, "vector_dimension", None)
        await asyncio.to_thread(getattr(self.verifier, "warm_up", lambda: None))  # jieba, OpenCC, Cilin
        for space in self.spaces:
            await space.start(
                self.config, on_evict=self._evicted, redis=self._redis, key_prefix=self._key_prefix,
                redis_timeout=self._redis_timeout, entry_ttl=self._entry_ttl, sync_interval_ms=self.sync_interval_ms,
            )
            dim = space.embedder.dimension
            if want and want != dim:
                log.warning("vector_dimension=%s but %s produces %s; using %s", want, space.embedder.model_name, dim, dim)
        self._started = True

    async def close(self) -> None:
        """Stop following Redis and release the worker threads."""
        self._started = False
        for space in self.spaces:
            await space.close()

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
        space = self.space_of(text)
        if self._refuse_long(space, text, report):
            return None
        assert space.index is not None
        vec = await space.embedder.embed(text)
        # Search and text analysis (jieba, the rules) run in a worker thread, never on the event loop.
        cands, words = await asyncio.to_thread(self._search, space, scope, text, vec)
        if cands:
            self.similarity_buckets[_bucket(cands[0].score)] += 1
        if words:  # word vectors for the verifier's content-word rule, one batch through the lookup queue
            await space.embedder.embed_many(words, priority=LOOKUP)
        return await asyncio.to_thread(self.choose, text, cands, nlp, report, space=space)

    def _search(self, space: VectorSpace, scope: str, text: str, vec: np.ndarray) -> tuple[list[Candidate], list[str]]:
        assert space.index is not None
        cands = space.index.search(scope, vec, self.candidates)
        if any(c.scope != scope for c in cands):  # never across scopes, whatever the index holds
            self.rejections["scope_mismatch"] += sum(c.scope != scope for c in cands)
            cands = [c for c in cands if c.scope == scope]
        return cands, self._words_to_compare(text, cands, space)

    def _words_to_compare(self, text: str, cands: list[Candidate], space: VectorSpace, limit: int = 24) -> list[str]:
        """The differing content words of the query and its nearest candidates above the threshold that
        lexical evidence leaves unmatched and that are not embedded yet (usually none)."""
        out: dict[str, None] = {}
        scope = getattr(self.verifier, "content_scope", "slots")
        for c in (c for c in cands[:4] if c.score >= space.threshold - _EPS):
            out.update(dict.fromkeys(w for w in words_to_embed(text, c.question, scope) if space.embedder.cached_vector(w) is None))
        return list(out)[:limit]

    def _refuse_long(self, space: VectorSpace, text: str, report: dict | None = None) -> bool:
        """A text longer than the model reads is neither embedded nor indexed (its tail would not count)."""
        if space.embedder.fits(text):
            return False
        self.refused_long += 1
        if report is not None:
            report.update(accepted=False, reason="too_long")
        return True

    def choose(
        self, text: str, cands: list[Candidate], nlp: Any = None, report: dict | None = None,
        *, space: VectorSpace | None = None, encode_words: bool = False,
    ) -> SemanticMatch | None:
        """Apply threshold, verifier and ambiguity rule to search results (sorted by score).

        Accepted candidates within the margin of the nearest are ranked by cosine plus
        ``lexical_weight`` x content-word overlap; if the two best still tie, nothing is served
        (two stored questions with the same text always tie). Nor when another accepted entry
        above the threshold is the same question (``Verifier.same_question``) under a second
        answer ("duplicate_entries"). ``space``: the model the candidates come from (default the
        first); ``encode_words``: embed the words the verifier compares here (callers off the loop).
        """
        space = space or self.spaces[0]
        if encode_words:  # callers off the event loop (benchmarks): word vectors encoded here
            words = self._words_to_compare(text, cands, space)
            if words:
                space.embedder.embed_sync(words)

        def verify(question: str) -> Verdict:
            return self.verifier.verify(
                text, question, nlp, word_similarity=space.word_similarity, word_threshold=space.embedder.word_threshold
            )

        threshold = space.threshold - _EPS
        margin = self._margin(cands[0].score, space) if cands else space.margin
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
            verdict = verify(c.question)
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
            if c.entry_id in verified or (c.entry_id not in seen and verify(c.question).accepted):
                # One question stored twice with different answers: don't pick one of them.
                self.rejections["duplicate_entries"] += 1
                if report is not None:
                    report.update(
                        accepted=False, reason="duplicate_entries", question=best.question, similarity=min(1.0, best.score)
                    )
                return None
        if space.index is not None:
            space.index.touch(best.entry_id)
        return SemanticMatch(best.entry_id, best.question, best.score, verdict, best.scope)

    def _margin(self, best: float, space: VectorSpace) -> float:
        """The ambiguity margin at a best score of ``best``: ``ambiguity_margin`` near 1.0, growing
        linearly to ``adaptive_margin`` times that at the threshold (scores far from 1.0 are noisier,
        so a tie must be broken by a wider gap)."""
        t = space.threshold
        if self.adaptive_margin <= 1 or t >= 1:
            return space.margin
        closeness = min(1.0, max(0.0, (best - t) / (1 - t)))
        return space.margin * (self.adaptive_margin - (self.adaptive_margin - 1) * closeness)

    async def add(self, scope: str, text: str, entry_id: str) -> bool:
        """Index ``text`` (a question whose answer is cached under ``entry_id``) in ``scope``.

        False (nothing indexed or written to Redis) when the text is longer than its model reads.
        """
        if not self._started:
            return False
        try:
            space = self.space_of(text)
            if space.index is None or self._refuse_long(space, text):
                return False
            vec = await space.embedder.embed(text, priority=BACKGROUND)
            await asyncio.to_thread(space.index.add, scope, entry_id, text, vec)
        except Exception as exc:  # noqa: BLE001 - fail open
            self.errors[type(exc).__name__] += 1
            log.warning("semantic add failed: %r", exc)
            return False
        self.adds += 1
        if space.store is not None:
            await space.store.put(entry_id, scope, text, vec)
        return True

    async def remove(self, entry_id: str) -> bool:
        """Forget ``entry_id`` here and (when configured) in Redis."""
        found = False
        for space in self.spaces:
            if space.index is None:
                continue
            try:
                here = await asyncio.to_thread(space.index.remove, entry_id)
            except Exception as exc:  # noqa: BLE001
                self.errors[type(exc).__name__] += 1
                continue
            found = found or here
            if space.store is not None:
                await space.store.delete(entry_id)
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
        out: list[list[dict[str, Any]]] = [[] for _ in texts]
        if not texts or k <= 0 or not self._started:
            return out
        if not getattr(self.config, "enable_vector_search", True):
            return out
        by_space: dict[int, list[int]] = {}
        for i, text in enumerate(texts):
            space = self.space_of(text)
            if space.index is not None and space.embedder.fits(text):
                by_space.setdefault(id(space), []).append(i)
        for space in self.spaces:
            rows_of = by_space.get(id(space))
            if not rows_of:
                continue
            assert space.index is not None
            try:
                vecs = await space.embedder.embed_many([texts[i] for i in rows_of])
                rows = await asyncio.to_thread(space.index.search_many, scope, vecs, k * 2)
            except Exception as exc:  # noqa: BLE001 - fail open
                self.errors[type(exc).__name__] += 1
                continue
            for i, row in zip(rows_of, rows):
                out[i] = _similar(row, space.threshold - _EPS, k)
        return out

    # -- eviction and reporting --------------------------------------------------------

    def _evicted(self, entry_ids: list[str]) -> None:
        if self.on_evict is not None:
            try:
                self.on_evict(entry_ids)
            except Exception as exc:  # noqa: BLE001
                self.errors["on_evict"] += 1
                log.warning("on_evict callback failed: %r", exc)

    def stats(self) -> dict[str, Any]:
        first = self.spaces[0].stats()
        return {
            "lookups": self.lookups,
            "semantic_hits": self.hits,
            "misses": self.misses,
            "timeouts": self.timeouts,
            "refused_long": self.refused_long,
            "hit_latency_mean_ms": (1000 * self.hit_seconds / self.hits) if self.hits else 0.0,
            "rejections": dict(self.rejections),
            "similarity_histogram": dict(sorted(self.similarity_buckets.items())),
            "adds": self.adds,
            "errors": dict(self.errors),
            # The first model's parts under the historical keys; every model's under "models".
            "index": first["index"],
            "embedder": first["embedder"],
            "redis": first["redis"],
            "models": {space.embedder.model_name: space.stats() for space in self.spaces},
        }

    def health(self) -> dict[str, Any]:
        stores = [s.store for s in self.spaces if s.store is not None]
        return {
            "started": self._started,
            "model_loaded": all(s.embedder.loaded for s in self.spaces),
            "index_entries": sum(len(s.index) for s in self.spaces if s.index is not None),
            "redis": None if not stores else ("ok" if all(st.available for st in stores) else "down"),
            "sync_running": bool(stores) and all(s.syncing for s in self.spaces if s.store is not None),
        }


class SimilaritySearchHelper(SemanticCache):
    """The name the design documents use; same object as :class:`SemanticCache`."""


def _similar(row: list[Candidate], threshold: float, k: int) -> list[dict[str, Any]]:
    """Search results at or above ``threshold``, de-duplicated by entry id and question, at most ``k``."""
    seen: set[str] = set()
    items: list[dict[str, Any]] = []
    for c in row:
        if c.score < threshold or c.entry_id in seen or c.question in seen:
            continue
        seen.update((c.entry_id, c.question))
        items.append({"question": c.question, "similarity": min(1.0, c.score), "entry_id": c.entry_id})
        if len(items) >= k:
            break
    return items


def _bucket(score: float) -> str:
    """Best-candidate similarity in 0.05-wide buckets, e.g. "0.85-0.90"."""
    lo = min(19, max(0, int(score * 20))) / 20
    return f"{lo:.2f}-{lo + 0.05:.2f}"
