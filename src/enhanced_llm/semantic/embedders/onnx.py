"""The embedding model's transformer run by ONNX Runtime: same vectors, a fraction of the time.

A semantic hit is on the request's critical path, and on a CPU one sentence
through MiniLM takes about 8 ms in torch against about 3.5 ms in ONNX Runtime
(one thread, measured on the 2-core development machine; the vectors agree to
cosine 1.000). :class:`OnnxEncoder` exports the ``Transformer`` module of a
loaded ``SentenceTransformer`` with ``torch.onnx.export`` once, keeps the file
under ``~/.cache/enhanced_llm/onnx/`` (or ``$ENHANCED_LLM_HOME/onnx``) and reproduces the model's pooling
(mean or CLS) and normalisation in NumPy.

sentence-transformers has its own ONNX backend, but it goes through
``optimum``, whose ONNX exporter pins a transformers release older than the one
vLLM needs; this module needs only ``onnxruntime``.

Only the common layout ``Transformer -> Pooling(mean|cls) [-> Normalize]`` is
supported; :meth:`OnnxEncoder.build` raises :class:`OnnxUnsupported` for
anything else, and the caller keeps using torch. Every export is checked
against torch on a few probe sentences before it is used, so a stale or broken
file is rebuilt once and then refused, never served.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

__all__ = ["OnnxEncoder", "OnnxUnsupported", "default_cache_dir"]

log = logging.getLogger(__name__)

#: Sentences the export is checked on (short, long, non-ASCII, padding in a batch).
PROBES = (
    "How do I convert Celsius to Fahrenheit?",
    "What is the capital of France, and how many people live there today?",
    "Ünïcödé text, numbers 12345 and punctuation!?",
    "a",
)
#: Smallest cosine between an ONNX vector and its torch vector that counts as the same model.
MIN_AGREEMENT = 0.9999


class OnnxUnsupported(Exception):
    """The model cannot be run by :class:`OnnxEncoder` (layout, export or check failed)."""


def default_cache_dir() -> Path:
    """Where exported models are kept: ``$ENHANCED_LLM_HOME/onnx`` or ``~/.cache/enhanced_llm/onnx``."""
    from enhanced_llm.models import cache_home

    return cache_home() / "onnx"


class OnnxEncoder:
    """Encodes texts like ``model.encode(..., normalize_embeddings=True)``, through ONNX Runtime."""

    def __init__(self, model: Any, session: Any, pooling: str) -> None:
        self._model = model  # the SentenceTransformer: its tokenize() prepares the inputs
        self._session = session
        self._inputs = [i.name for i in session.get_inputs()]
        self.pooling = pooling
        self.path = ""

    @classmethod
    def build(cls, model: Any, *, threads: int = 1, cache_dir: Path | None = None) -> "OnnxEncoder":
        """Export (or reuse) ``model``'s transformer, open a session and check it against torch.

        Raises :class:`OnnxUnsupported` when the model's layout is not supported or the
        export does not reproduce torch's vectors; ``ImportError`` without onnxruntime.
        """
        import onnxruntime  # noqa: F401 - fail early, before exporting

        pooling = _pooling_of(model)
        path = (cache_dir or default_cache_dir()) / f"{_fingerprint(model)}.onnx"
        problem = ""
        for attempt in (1, 2):
            if not path.exists():
                _export(model, path)
            try:
                encoder = cls(model, _session(path, threads), pooling)
                encoder.path = str(path)
                agreement = encoder.agreement()
            except Exception as exc:  # noqa: BLE001 - an unreadable file: export again
                problem = f"the exported file does not load: {exc!r}"
            else:
                if agreement >= MIN_AGREEMENT:
                    return encoder
                problem = f"the export disagrees with torch (cosine {agreement:.5f})"
            log.warning("ONNX model %s: %s; %s", path, problem, "exporting again" if attempt == 1 else "giving up")
            path.unlink(missing_ok=True)
        raise OnnxUnsupported(problem)

    def encode(self, texts: Sequence[str], chunk: int = 32) -> np.ndarray:
        """Normalised embeddings of ``texts``, ``(n, dim)`` float32.

        Like sentence-transformers, texts are sorted by length and run in chunks so
        that one long text does not pad a whole batch.
        """
        texts = list(texts)
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        out = np.empty((len(texts), 0), dtype=np.float32)
        for start in range(0, len(texts), chunk):
            rows = order[start : start + chunk]
            vecs = self._encode_batch([texts[i] for i in rows])
            if out.shape[1] == 0:
                out = np.empty((len(texts), vecs.shape[1]), dtype=np.float32)
            out[rows] = vecs
        return out

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        features = _features(self._model, texts)
        feed = {name: features[name].numpy().astype(np.int64) for name in self._inputs}
        (tokens,) = self._session.run(None, feed)
        mask = feed["attention_mask"][..., None].astype(np.float32)
        if self.pooling == "cls":
            vecs = tokens[:, 0]
        else:
            vecs = (tokens * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1e-9)
        norms = np.linalg.norm(vecs, axis=1, keepdims=True)
        return (vecs / np.maximum(norms, 1e-12)).astype(np.float32)

    def agreement(self) -> float:
        """Smallest cosine between this encoder's and torch's vectors of :data:`PROBES`."""
        reference = self._model.encode(list(PROBES), normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
        return float(np.min(np.sum(self.encode(PROBES) * reference, axis=1)))


def _pooling_of(model: Any) -> str:
    """'mean' or 'cls' for the supported layout; raises OnnxUnsupported otherwise."""
    names = [type(m).__name__ for m in model]
    if names not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]):
        raise OnnxUnsupported(f"module layout {names} is not Transformer -> Pooling [-> Normalize]")
    if not hasattr(model[0], "auto_model"):
        raise OnnxUnsupported("the Transformer module has no auto_model")
    config = model[1].get_config_dict()
    mode = config.get("pooling_mode")
    if mode not in ("mean", "cls") or not config.get("include_prompt", True):
        raise OnnxUnsupported(f"pooling {config} is not plain mean or CLS pooling")
    if any(getattr(model, "prompts", {}).values()) or getattr(model, "default_prompt_name", None):
        raise OnnxUnsupported("the model adds prompts to its inputs")
    return mode


def _fingerprint(model: Any) -> str:
    """File name of the export: the model's name, its weights' identity and the torch version."""
    import torch

    source = str(getattr(model[0].auto_model, "name_or_path", "") or "")
    h = hashlib.blake2b(digest_size=10)
    h.update(f"{source}|{torch.__version__}|{model.max_seq_length}".encode())
    if os.path.isdir(source):
        for f in sorted(Path(source).glob("*")):
            if f.is_file():
                st = f.stat()
                h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    else:  # a hub name: the weights themselves identify the model
        for tensor in model[0].auto_model.state_dict().values():
            h.update(tensor.detach().cpu().numpy().tobytes()[:4096])
    slug = "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(source).name or "model")
    return f"{slug}-{h.hexdigest()}"


def _export(model: Any, path: Path) -> None:
    """``torch.onnx.export`` of the transformer, written atomically (replicas may race)."""
    import torch

    class _LastHiddenState(torch.nn.Module):
        def __init__(self, transformer: Any, names: list[str]) -> None:
            super().__init__()
            self.transformer, self.names = transformer, names

        def forward(self, *inputs: Any) -> Any:
            return self.transformer(**dict(zip(self.names, inputs))).last_hidden_state

    features = _features(model, list(PROBES[:2]))
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in features]
    wrapper = _LastHiddenState(model[0].auto_model, names).eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".onnx", dir=path.parent)
    os.close(fd)
    try:
        log.info("exporting the embedding model to %s", path)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings about shapes: the export is checked on probes
            torch.onnx.export(
                wrapper, tuple(features[n] for n in names), tmp,
                input_names=names, output_names=["last_hidden_state"],
                dynamic_axes={n: {0: "batch", 1: "sequence"} for n in [*names, "last_hidden_state"]},
                opset_version=17, dynamo=False,
            )
        os.replace(tmp, path)
    except Exception as exc:
        raise OnnxUnsupported(f"torch.onnx.export failed: {exc!r}") from exc
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _features(model: Any, texts: list[str]) -> dict[str, Any]:
    """The model's own tokenization (truncation, special tokens) of ``texts``, as torch tensors."""
    prepare = getattr(model, "preprocess", None) or model.tokenize  # preprocess: sentence-transformers >= 6
    return prepare(texts)


def _session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, threads)
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
