"""Former home of the embedder; kept so that ``enhanced_llm.semantic.embedder`` imports keep working.

The embedders live in :mod:`enhanced_llm.semantic.embedders`.
"""

from enhanced_llm.semantic.embedders import MINILM as DEFAULT_MODEL
from enhanced_llm.semantic.embedders import SentenceTransformerEmbedder as Embedder
from enhanced_llm.semantic.embedders import TextInfo, resolve_model_path

__all__ = ["DEFAULT_MODEL", "Embedder", "TextInfo", "resolve_model_path"]
