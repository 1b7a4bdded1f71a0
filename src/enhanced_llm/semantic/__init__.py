"""Semantic cache: embeddings, a scoped FAISS index, a rule-based verifier and Redis sync.

The engine uses :class:`SemanticCache` (alias :class:`SimilaritySearchHelper`);
the other classes are its parts, usable alone. Needs the ``semantic`` extra.
"""

from enhanced_llm.semantic.embedder import DEFAULT_MODEL, Embedder
from enhanced_llm.semantic.embedders import BaseEmbedder, E5Embedder, SentenceTransformerEmbedder, TextInfo
from enhanced_llm.semantic.index import Candidate, VectorIndex
from enhanced_llm.semantic.search import SemanticCache, SemanticMatch, SimilaritySearchHelper
from enhanced_llm.semantic.space import VectorSpace
from enhanced_llm.semantic.store import SemanticStore, StoredEntry
from enhanced_llm.semantic.verifier import Verdict, Verifier

__all__ = [
    "DEFAULT_MODEL",
    "BaseEmbedder",
    "Candidate",
    "E5Embedder",
    "Embedder",
    "SemanticCache",
    "SemanticMatch",
    "SemanticStore",
    "SentenceTransformerEmbedder",
    "SimilaritySearchHelper",
    "StoredEntry",
    "TextInfo",
    "VectorIndex",
    "VectorSpace",
    "Verdict",
    "Verifier",
]
