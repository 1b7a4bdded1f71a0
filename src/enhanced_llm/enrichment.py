"""Work that runs beside generation: NLP analysis, similarity search, context enhancement.

* :meth:`Enricher.enrich` analyses the question (spaCy / jieba, off the event
  loop) and searches earlier questions for it and, when it is complex, for each
  of its clauses, in one embedding batch. Results land in the request's
  metadata (``nlp_result``, ``similar_results``). It never raises.
* :meth:`Enricher.enhance` (opt-in, ``features.enable_context_enhancement``)
  runs *before* generation: verified cached answers to the sub-questions of a
  complex question are put in front of the prompt, or into a system message of
  a chat. The cache key is then the key of the enhanced prompt.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from .config import HandlerConfig, SimilarityConfig
from .metadata import OutputMetadata

__all__ = ["Enricher", "prompt_text", "CONTEXT_HEADER"]

logger = logging.getLogger(__name__)

CONTEXT_HEADER = "Context from earlier answers:"


def prompt_text(prompt: Any) -> str | None:
    """The text of a text prompt (a str, or a dict with a ``prompt`` string), else None."""
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, Mapping) and isinstance(prompt.get("prompt"), str):
        return prompt["prompt"]
    return None


class Enricher:
    """Runs the NLP analyzer and the similarity helper for one engine (either may be None)."""

    def __init__(self, analyzer: Any, helper: Any, handler_config: HandlerConfig, similarity_config: SimilarityConfig):
        self.analyzer = analyzer
        self.helper = helper
        self.handler_config = handler_config
        self.similarity_config = similarity_config

    @property
    def active(self) -> bool:
        return self.analyzer is not None or self._searching

    @property
    def _searching(self) -> bool:
        return (
            self.helper is not None
            and self.handler_config.features.enable_similarity_search
            and self.similarity_config.enable_vector_search
            and self.similarity_config.max_similar_results > 0
        )

    @property
    def timeout(self) -> float:
        """How long a finished output may wait for the enrichment to land (a short grace, never the analysis timeout)."""
        return self.handler_config.nlp.final_output_grace

    async def enrich(self, meta: OutputMetadata, text: str, scope: str | None) -> Any:
        """Fill ``meta.nlp_result`` and ``meta.similar_results``; return the NLPResult (or None)."""
        analysis = None
        try:
            if self.analyzer is not None:
                analysis = await self.analyzer.analyze(text)
                meta.nlp_result = analysis.to_dict()
            if self._searching and scope is not None:  # never search across tenants
                meta.similar_results = await self._similar(text, analysis, scope)
        except Exception as exc:  # enrichment is best effort; the request goes on
            logger.warning("enrichment failed: %r", exc)
        return analysis

    async def _similar(self, text: str, analysis: Any, scope: str | None) -> list[dict[str, Any]]:
        clauses = [c.text for c in analysis.clauses] if analysis is not None and analysis.is_complex else []
        queries = [text, *clauses]
        rows = await self.helper.batch_search(queries, scope=scope)
        results: list[dict[str, Any]] = []
        for index, (query, row) in enumerate(zip(queries, rows)):
            for item in row:
                results.append({**item, "query": query, "clause": None if index == 0 else index - 1})
        return results

    async def enhance(self, text: str, scope: str, cache: Any) -> list[dict[str, Any]]:
        """Verified cached answers to the sub-questions of ``text`` (empty when it is simple)."""
        if self.analyzer is None or self.helper is None or cache is None:
            return []
        try:
            analysis = await self.analyzer.analyze(text)
            if not analysis.is_complex:
                return []
            added = []
            for clause in analysis.clauses:
                match = await self.helper.lookup(scope, clause.text)
                entry = await cache.get_quiet(match.entry_id) if match is not None else None
                if entry is not None and entry.completions:
                    added.append({
                        "clause": clause.text, "question": match.question,
                        "similarity": match.similarity, "answer": entry.completions[0].text,
                    })
            return added
        except Exception as exc:
            logger.warning("context enhancement failed: %r", exc)
            return []


def context_block(added: list[dict[str, Any]]) -> str:
    """The text put in front of the prompt (or into the system message of a chat)."""
    lines = [CONTEXT_HEADER]
    for item in added:
        lines.append(f"Q: {item['question']}\nA: {item['answer']}")
    return "\n".join(lines) + "\n\n"
