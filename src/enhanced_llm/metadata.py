"""The metadata every output carries (``RequestOutput.metadata``, a plain dict)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["OutputMetadata", "CacheSource"]

CacheSource = Literal["exact", "semantic"]


@dataclass(slots=True)
class OutputMetadata:
    """Per-request facts, stamped onto each output as a dict by the collector.

    ``as_dict()`` keys: ``cache_hit`` and ``cached`` (the same bool), ``cache_source``
    (``"exact"``, ``"semantic"`` or None), ``cache_level`` (``"memory"``, ``"redis"`` or
    None), ``similarity`` (cosine, semantic hits), ``processing_time`` (seconds since
    the request reached ``add_request``), ``nlp_result``, ``similar_results``,
    ``cache_status`` (why the cache did what it did), ``coalesced`` (answered by an
    identical in-flight request), ``verification`` (the semantic verifier's verdict),
    ``context_added`` (what context enhancement put into the prompt).
    """

    started: float = field(default_factory=time.perf_counter)
    cache_hit: bool = False
    cache_source: CacheSource | None = None
    cache_level: Literal["memory", "redis"] | None = None
    similarity: float | None = None
    cache_status: str = "miss"
    coalesced: bool = False
    nlp_result: dict[str, Any] | None = None
    similar_results: list[dict[str, Any]] | None = None
    verification: dict[str, Any] | None = None
    context_added: list[dict[str, Any]] | None = None
    finished_at: float | None = None

    def as_dict(self) -> dict[str, Any]:
        end = self.finished_at if self.finished_at is not None else time.perf_counter()
        return {
            "cache_hit": self.cache_hit,
            "cached": self.cache_hit,
            "cache_source": self.cache_source,
            "cache_level": self.cache_level,
            "similarity": self.similarity,
            "processing_time": end - self.started,
            "cache_status": self.cache_status,
            "coalesced": self.coalesced,
            "nlp_result": self.nlp_result,
            "similar_results": self.similar_results,
            "verification": self.verification,
            "context_added": self.context_added,
        }
