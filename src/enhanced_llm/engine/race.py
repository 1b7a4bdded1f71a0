"""The semantic lookup, racing the engine.

A cacheable miss goes to the engine at once; beside it, the semantic cache looks for a stored
question that is verifiably the same. The request's first output is held back while the lookup
runs (at most ``SimilarityConfig.lookup_timeout``). If a verified paraphrase is found before
anything was delivered, its answer replaces the engine's stream (role ``semantic``), identical
requests waiting on this one get it too, and the engine request is aborted. Otherwise the
engine's outputs are the answer and the flight goes live.

A stored answer is served only if it belongs to the request's scope (re-checked on the entry
itself, not only on the index) and fits the request's ``max_tokens``.
"""

from __future__ import annotations

import logging
from typing import Any

from ..answers import entry_fits
from .flow import RequestFlow, Role


__all__ = ["semantic_race"]

logger = logging.getLogger(__name__)


async def semantic_race(engine: Any, flow: RequestFlow) -> None:
    """Step "beside generation": a verified paraphrase answers, if found before the first output."""
    key = flow.plan.key if flow.plan is not None else None
    flight, meta = flow.flight, flow.meta
    answered = False
    try:
        assert key is not None and key.question
        report: dict[str, Any] = {}
        match = await engine.similarity_helper.lookup(key.scope, key.question, report=report)
        if match is None:
            if report:  # the verifier's (or the ambiguity rule's) decision, for the metadata
                meta.verification, meta.similarity = report, report.get("similarity")
            return
        meta.similarity = match.similarity
        meta.verification = {"accepted": match.verdict.accepted, "reason": match.verdict.reason, "question": match.question}
        entry = await engine.cache_manager.get_quiet(match.entry_id) if engine.cache_manager is not None else None
        if entry is None:  # its answer is gone: drop the vector too
            engine.spawn(engine.similarity_helper.remove(match.entry_id))
            return
        if entry.scope != key.scope:  # the index pointed outside the request's scope: never served
            engine.count("semantic_scope_mismatch")
            meta.verification = {**meta.verification, "accepted": False, "reason": "scope_mismatch"}
            return
        if not entry_fits(entry, key.max_tokens):
            meta.verification = {**meta.verification, "accepted": False, "reason": "max_tokens"}
            return
        if flow.collector.delivered or meta.finished_at is not None:
            return  # too late: the engine's answer is already on its way
        reading = not (flow.ended or flow.reader_gone)
        if not reading and (flight is None or flight.readers == 0):
            return
        if reading:
            flow.mark(Role.SEMANTIC, "semantic_hit")
            engine.count_saving(entry, semantic=True)
            flow.answer_with(entry)
        answered = True
        if flight is not None:  # identical requests waiting on this one get the same answer
            engine.flights.resolve(flight, entry, "semantic")
        if flow.engine_request_id is not None:
            await engine.abort_engine([flow.engine_request_id])
    except Exception:  # the semantic layer fails open
        logger.exception("semantic race failed")
    finally:
        flow.collector.release()
        if flight is not None and not answered:
            engine.flights.go_live(flight)
