"""The embedder's ONNX Runtime backend against sentence-transformers' torch path (real MiniLM)."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytest.importorskip("sentence_transformers")
pytest.importorskip("onnxruntime")

from enhanced_llm.config import SimilarityConfig  # noqa: E402
from enhanced_llm.semantic import Embedder, SemanticCache  # noqa: E402
from enhanced_llm.semantic.onnx_encoder import OnnxEncoder, OnnxUnsupported  # noqa: E402

TEXTS = [
    "How do I convert Celsius to Fahrenheit?",
    "what is love",
    "Ünïcödé, numbers 12345 and punctuation!?",
    "word " * 600,  # past max_seq_length: truncated the same way on both paths
    "",
]


@pytest.fixture(scope="module")
def model():
    return Embedder(backend="torch").load()


def torch_vectors(model, texts):
    return model.encode(texts, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)


def test_onnx_is_the_default_on_cpu_and_gives_torchs_vectors(model, tmp_path, monkeypatch):
    monkeypatch.setenv("ENHANCED_LLM_HOME", str(tmp_path))
    emb = Embedder(model=model)
    vecs = emb.embed_sync(TEXTS)
    assert emb.stats()["backend"] == "onnx", emb.backend_note
    assert list(tmp_path.glob("onnx/*.onnx")), "the export is kept for the next process"
    cosines = np.sum(vecs * torch_vectors(model, TEXTS), axis=1)
    assert cosines.min() > 0.9999, cosines
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)


def test_the_config_selects_the_backend(model):
    cache = SemanticCache(SimilarityConfig(embedding_backend="torch", embedding_threads=2), embedder=None)
    assert (cache.embedder.backend, cache.embedder.threads) == ("torch", 2)
    emb = Embedder(model=model, backend="torch")
    emb.load()
    assert emb.active_backend == "torch" and emb.backend_note == ""
    with pytest.raises(ValueError):
        Embedder(backend="tensorrt")


def test_an_unreadable_export_is_rebuilt(model, tmp_path):
    first = OnnxEncoder.build(model, cache_dir=tmp_path)
    with open(first.path, "wb") as f:
        f.write(b"not an onnx model")
    again = OnnxEncoder.build(model, cache_dir=tmp_path)
    assert again.path == first.path and again.agreement() > 0.9999


def test_an_unsupported_layout_falls_back_to_torch(model):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling

    max_pooled = SentenceTransformer(modules=[model[0], Pooling(model[1].get_config_dict()["embedding_dimension"], "max")])
    with pytest.raises(OnnxUnsupported, match="pooling"):
        OnnxEncoder.build(max_pooled)
    emb = Embedder(model=max_pooled)
    vecs = emb.embed_sync(["still works"])
    assert emb.active_backend == "torch" and "pooling" in emb.backend_note
    assert vecs.shape == (1, 384)
