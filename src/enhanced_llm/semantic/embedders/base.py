"""What every embedder of the semantic cache does, whatever model runs underneath.

:class:`BaseEmbedder` returns L2-normalised ``float32`` vectors (so inner
product == cosine) and never runs a model on the event loop: encoding happens
in one worker thread. Concurrent ``await embed(text)`` calls are
*micro-batched*: everything waiting when the worker is free is encoded in one
model call, so requests arriving while a batch is encoded form the next one.

Two queues feed the worker. **Lookups** (a request waiting for a semantic hit)
always go first; **background** work (index additions, similarity search for
metadata) fills what is left of a batch, and a batch with no lookup in it holds
at most ``max_background_batch`` texts, so a lookup arriving meanwhile never
waits behind a long batch of additions. A lookup whose caller gave up (its
``asyncio.wait_for`` timed out, the request was aborted) is dropped before
encoding, unencoded, and counted.

The caches of vectors and of tokenizer facts are LRUs bounded in **bytes**
(texts and vectors counted), not in entries: a cache of prompts must not grow
with their length.

A subclass supplies the model: ``_load_model``, ``_encode_batch``,
``_count_tokens``, ``max_tokens`` and ``dimension``. It also names its
``family`` (the key of its vector space: vectors of different models are never
compared) and its calibrated ``default_threshold``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from enhanced_llm.errors import EmbeddingError

__all__ = ["BaseEmbedder", "TextInfo", "LOOKUP", "BACKGROUND"]

log = logging.getLogger(__name__)

LOOKUP = "lookup"  #: a request is waiting for this vector
BACKGROUND = "background"  #: index additions, similarity search: may wait

#: Characters tokenized at most to decide whether a text fits the model (bounds the cost of a huge prompt).
_CHARS_PER_TOKEN_BOUND = 32
#: Bytes a cache entry costs beyond its text's UTF-8 bytes (key object, LRU slots, value tuple), and a
#: vector entry beyond that and its float32 data (the array object); measured with RSS (CPython 3.11,
#: cachetools): ~290 and ~480 bytes.
_ENTRY_OVERHEAD = 300
_ARRAY_OVERHEAD = 180


@dataclass(frozen=True, slots=True)
class TextInfo:
    """What the model's tokenizer makes of a text."""

    coverage: float  #: share of tokens that are not unknown ([UNK]); 0.0 for empty text
    n_tokens: int  #: tokens, without special tokens (at least max_tokens + 1 when truncated)
    truncated: bool  #: longer than the model reads: the tail would not reach the embedding


def _text_bytes(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass")) + _ENTRY_OVERHEAD


def _size_of(item: tuple[Any, int]) -> int:
    return item[1]


class BaseEmbedder:
    """Normalised sentence embeddings, micro-batched off the event loop (see the module doc)."""

    #: Vector-space key: two embedders with the same family produce comparable vectors.
    family: str = ""
    #: Cosine a candidate needs with this model before the verifier looks at it (calibrated per model).
    default_threshold: float = 0.8
    #: Ambiguity margin at this model's cosine scale (two entries closer than this tie).
    default_margin: float = 0.02
    #: Cosine two single words need under this model to count as the same meaning (verifier evidence).
    word_threshold: float = 0.85  # MiniLM; strict: above every near-miss word pair of the gold sets (0.82)

    def __init__(
        self,
        model_name: str,
        *,
        batch_window_ms: float = 0.0,
        max_batch_size: int = 64,
        max_background_batch: int = 16,
        cache_bytes: int = 32 << 20,
    ) -> None:
        from cachetools import LRUCache

        self.model_name = model_name
        self.batch_window = max(0.0, batch_window_ms) / 1000.0
        self.max_batch_size = max(1, max_batch_size)
        self.max_background_batch = max(1, min(max_background_batch, self.max_batch_size))
        self.cache_bytes = max(1, cache_bytes)
        self._load_lock = threading.Lock()
        self._loaded = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embedder")
        # Half of the byte budget for vectors, half for tokenizer facts. Values are
        # (value, bytes of key + value): cachetools sizes values only, and the key is the text.
        self._cache: LRUCache[str, tuple[np.ndarray, int]] = LRUCache(
            maxsize=max(1, self.cache_bytes // 2), getsizeof=_size_of
        )
        self._info_cache: LRUCache[str, tuple[TextInfo, int]] = LRUCache(
            maxsize=max(1, self.cache_bytes // 2), getsizeof=_size_of
        )
        self._cache_lock = threading.Lock()
        # Micro-batching state, bound to the loop that last used it.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queues: dict[str, list[tuple[str, asyncio.Future[np.ndarray]]]] = {LOOKUP: [], BACKGROUND: []}
        self._worker: asyncio.Task[None] | None = None
        self._full: asyncio.Event | None = None
        # Stats.
        self.calls = 0
        self.cache_hits = 0
        self.batches = 0
        self.encoded_texts = 0
        self.failures = 0
        self.dropped_cancelled = 0
        self.encode_seconds = 0.0
        self.batch_sizes: Counter[int] = Counter()

    # -- what a subclass provides ------------------------------------------------------

    def _load_model(self) -> None:
        """Load the model (called once, under a lock, in whatever thread asks first)."""
        raise NotImplementedError

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        """``(n, dim)`` normalised vectors of ``texts`` (worker thread)."""
        raise NotImplementedError

    def _count_tokens(self, text: str) -> tuple[int, int]:
        """``(tokens, unknown tokens)`` of ``text`` without special tokens."""
        raise NotImplementedError

    @property
    def max_tokens(self) -> int:
        """Tokens of a text (without special tokens) the model reads; longer texts are refused."""
        raise NotImplementedError

    @property
    def dimension(self) -> int:
        raise NotImplementedError

    def backend_stats(self) -> dict[str, Any]:
        """Extra fields for :meth:`stats` (backend in use, notes)."""
        return {}

    # -- model ---------------------------------------------------------------------------

    def load(self) -> Any:
        """Load the model (idempotent, thread-safe)."""
        if not self._loaded:
            with self._load_lock:
                if not self._loaded:
                    self._load_model()
                    self._loaded = True
        return self

    async def aload(self) -> Any:
        """:meth:`load` in the worker thread."""
        if self._loaded:
            return self
        return await asyncio.get_running_loop().run_in_executor(self._executor, self.load)

    @property
    def loaded(self) -> bool:
        return self._loaded

    # -- tokenizer-level facts ---------------------------------------------------------------

    def text_info(self, text: str) -> TextInfo:
        """Coverage, length and truncation of ``text`` under the model's tokenizer (cached).

        At most ``max_tokens * 32`` characters are tokenized: past that the text is
        known to be too long without reading the rest.
        """
        with self._cache_lock:
            cached = self._info_cache.get(text)
        if cached is not None:
            return cached[0]
        self.load()
        limit = self.max_tokens
        head = text[: limit * _CHARS_PER_TOKEN_BOUND]
        n, unknown = self._count_tokens(head) if head.strip() else (0, 0)
        info = TextInfo(
            coverage=((n - unknown) / n) if n else 0.0,
            n_tokens=n,
            truncated=n > limit or len(head) < len(text),
        )
        size = _text_bytes(text)
        if size <= self._info_cache.maxsize // 4:  # a huge text is not worth a slot
            with self._cache_lock:
                self._info_cache[text] = (info, size)
        return info

    def fits(self, text: str) -> bool:
        """Does the model read all of ``text``?"""
        return not self.text_info(text).truncated

    def coverage(self, text: str) -> float:
        """Share of ``text``'s tokens the model knows (0.0 for empty text)."""
        return self.text_info(text).coverage

    # -- encoding ----------------------------------------------------------------------------

    def embed_sync(self, texts: Sequence[str]) -> np.ndarray:
        """Encode ``texts`` now, in the calling thread; returns ``(n, dim)`` float32."""
        texts = list(texts)
        self.calls += len(texts)
        out: list[np.ndarray | None] = []
        missing: dict[str, list[int]] = {}
        with self._cache_lock:
            for i, t in enumerate(texts):
                hit = self._cache.get(t)
                v = hit[0] if hit is not None else None
                out.append(v)
                if v is None:
                    missing.setdefault(t, []).append(i)
                else:
                    self.cache_hits += 1
        if missing:
            uniq = list(missing)
            for t, v in zip(uniq, self._encode(uniq)):
                for i in missing[t]:
                    out[i] = v
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return np.stack(out)  # type: ignore[arg-type]

    def cached_vector(self, text: str) -> np.ndarray | None:
        """The vector of ``text`` if it is in the cache (never runs the model)."""
        with self._cache_lock:
            hit = self._cache.get(text)
        return hit[0] if hit is not None else None

    async def embed(self, text: str, *, priority: str = LOOKUP) -> np.ndarray:
        """Embedding of one text, ``(dim,)`` float32; batched with concurrent callers.

        ``priority`` is :data:`LOOKUP` (default) or :data:`BACKGROUND`. Raises
        :class:`EmbeddingError` when the model fails.
        """
        self.calls += 1
        with self._cache_lock:
            hit = self._cache.get(text)
        if hit is not None:
            self.cache_hits += 1
            return hit[0]
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # first use, or a new event loop (tests)
            self._loop, self._worker, self._full = loop, None, asyncio.Event()
            self._queues = {LOOKUP: [], BACKGROUND: []}
        fut: asyncio.Future[np.ndarray] = loop.create_future()
        self._queues[LOOKUP if priority == LOOKUP else BACKGROUND].append((text, fut))
        if self._waiting() >= self.max_batch_size:
            assert self._full is not None
            self._full.set()
        if self._worker is None:
            self._worker = loop.create_task(self._drain())
        return await fut

    async def embed_many(self, texts: Sequence[str], *, priority: str = BACKGROUND) -> np.ndarray:
        """Embeddings of several texts, ``(n, dim)``; joins the same batches as :meth:`embed`."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return np.stack(await asyncio.gather(*(self.embed(t, priority=priority) for t in texts)))

    def _waiting(self) -> int:
        return sum(len(q) for q in self._queues.values())

    def _next_batch(self) -> list[tuple[str, asyncio.Future[np.ndarray]]]:
        """Lookups first, then background work; cancelled waiters are dropped unencoded."""
        batch: list[tuple[str, asyncio.Future[np.ndarray]]] = []
        for name in (LOOKUP, BACKGROUND):
            queue = self._queues[name]
            cap = self.max_batch_size if batch or name == LOOKUP else self.max_background_batch
            while queue and len(batch) < cap:
                text, fut = queue.pop(0)
                if fut.done():  # cancelled: its caller gave up
                    self.dropped_cancelled += 1
                    continue
                batch.append((text, fut))
        return batch

    async def _drain(self) -> None:
        """Worker task: encode waiting requests in batches until none are left."""
        loop = asyncio.get_running_loop()
        full = self._full
        assert full is not None
        batch: list[tuple[str, asyncio.Future[np.ndarray]]] = []
        try:
            while self._waiting():
                if self.batch_window > 0 and self._waiting() < self.max_batch_size:
                    full.clear()
                    try:
                        await asyncio.wait_for(full.wait(), self.batch_window)
                    except TimeoutError:
                        pass
                batch = self._next_batch()
                if not batch:
                    continue
                uniq = list(dict.fromkeys(t for t, _ in batch))
                try:
                    vecs = await loop.run_in_executor(self._executor, self._encode, uniq)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - handed to every waiter
                    err = exc if isinstance(exc, EmbeddingError) else EmbeddingError(f"embedding failed: {exc!r}")
                    for _, f in batch:
                        if not f.done():
                            f.set_exception(err)
                    continue
                by_text = dict(zip(uniq, vecs))
                for t, f in batch:
                    if not f.done():
                        f.set_result(by_text[t])
                batch = []
        except asyncio.CancelledError:
            for queue in self._queues.values():
                batch += queue
                queue.clear()
            for _, f in batch:
                f.cancel()
            raise
        finally:
            self._worker = None

    def _encode(self, texts: list[str]) -> np.ndarray:
        """One model call (worker thread or caller); fills the LRU."""
        self.load()
        t0 = time.perf_counter()
        try:
            vecs = self._encode_batch(texts)
        except Exception as exc:
            self.failures += 1
            raise EmbeddingError(f"embedding failed: {exc!r}") from exc
        vecs = np.ascontiguousarray(vecs, dtype=np.float32)
        vecs.setflags(write=False)
        self.encode_seconds += time.perf_counter() - t0
        self.batches += 1
        self.encoded_texts += len(texts)
        self.batch_sizes[len(texts)] += 1
        with self._cache_lock:
            for t, v in zip(texts, vecs):
                size = _text_bytes(t) + int(v.nbytes) + _ARRAY_OVERHEAD
                if size <= self._cache.maxsize // 4:
                    self._cache[t] = (v, size)
        return vecs

    # -- lifecycle and stats ---------------------------------------------------------------

    def close(self) -> None:
        """Stop the worker thread (pending encodes finish first)."""
        self._executor.shutdown(wait=False, cancel_futures=True)

    def cache_usage(self) -> dict[str, int]:
        """Bytes and entries held by the two caches (their bounds are ``cache_bytes`` together)."""
        with self._cache_lock:
            return {
                "vector_cache_bytes": int(self._cache.currsize),
                "vector_cache_entries": len(self._cache),
                "info_cache_bytes": int(self._info_cache.currsize),
                "info_cache_entries": len(self._info_cache),
                "cache_bytes_bound": self.cache_bytes,
            }

    def stats(self) -> dict[str, Any]:
        return {
            "model": self.model_name,
            "family": self.family,
            "loaded": self._loaded,
            **self.backend_stats(),
            "calls": self.calls,
            "cache_hits": self.cache_hits,
            "batches": self.batches,
            "encoded_texts": self.encoded_texts,
            "dropped_cancelled": self.dropped_cancelled,
            "mean_batch_size": (self.encoded_texts / self.batches) if self.batches else 0.0,
            "batch_size_histogram": _histogram(self.batch_sizes),
            "failures": self.failures,
            "encode_seconds": round(self.encode_seconds, 6),
            **self.cache_usage(),
        }


def _histogram(sizes: Counter[int]) -> dict[str, int]:
    """Batch sizes in power-of-two buckets: {"1": n, "2-3": n, "4-7": n, ...}."""
    buckets: Counter[str] = Counter()
    for size, n in sizes.items():
        lo = 1 << (size.bit_length() - 1)
        hi = (lo << 1) - 1
        buckets["1" if lo == 1 else f"{lo}-{hi}"] += n
    return dict(sorted(buckets.items(), key=lambda kv: int(kv[0].split("-")[0])))
