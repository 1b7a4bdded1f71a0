"""The cache lookups that race the engine: Redis (while the engine is busy) and the semantic cache.

A cacheable miss goes to the engine at once; beside it, these lookups run, in this order:

* **Redis**, when the engine was busy at the hand-off: a miss must not wait for a Redis round
  trip before it joins the running batch (measured: waiting cost a step of the batch, i.e. TTFT
  and throughput, at 0 % repeats). On an idle engine the read happens before the hand-off instead
  (stage 7), so a hit there costs no prefill.
* **semantic**: a stored question that is verifiably the same.

The request's first output is held back while they run (each bounded by its timeout:
``CacheConfig.redis_timeout``, ``SimilarityConfig.lookup_timeout``). If an answer is found before
anything was delivered, it replaces the engine's stream (role ``cached`` or ``semantic``),
identical requests waiting on this one get it too, and the engine request is aborted. Otherwise
the engine's outputs are the answer and the flight goes live.

A stored answer is served only if it belongs to the request's scope (re-checked on the entry
itself, not only on the index) and fits the request's ``max_tokens``.
"""

from __future__ import annotations

import logging
from typing import Any

from ..answers import entry_fits
from .flow import RequestFlow, Role


__all__ = ["cache_race"]

logger = logging.getLogger(__name__)


async def cache_race(engine: Any, flow: RequestFlow, redis: bool, semantic: bool) -> None:
    """Step "beside generation": a Redis answer (``redis``), then a verified paraphrase
    (``semantic``), answers if found before the first output."""
    flight = flow.flight
    answered = False
    try:
        if redis:
            answered = await _redis_answer(engine, flow)
        if semantic and not answered:
            answered = await _semantic_answer(engine, flow)
    except Exception:  # the cache layers fail open
        logger.exception("cache race failed")
    finally:
        flow.collector.release()
        if flight is not None and not answered:
            engine.flights.go_live(flight)
        engine.contexts.put(flow.request_id, flow.meta)  # counted again with the verdict


async def _redis_answer(engine: Any, flow: RequestFlow) -> bool:
    """The exact answer in Redis, read while the engine already works on the request."""
    cache, key = engine.cache_manager, flow.plan.key
    entry = await cache.get_redis(key.exact)
    if entry is None:
        cache.count_miss()
        return False
    return await _take_over(engine, flow, entry, Role.CACHED, "hit", source="exact", level="redis")


async def _take_over(
    engine: Any, flow: RequestFlow, entry: Any, role: Role, status: str, source: str, level: str | None = None
) -> bool:
    """``entry`` replaces the engine's stream, unless something was delivered already."""
    flight, meta = flow.flight, flow.meta
    if flow.collector.delivered or meta.finished_at is not None:
        return False  # too late: the engine's answer is already on its way
    reading = not (flow.ended or flow.reader_gone)
    if not reading and (flight is None or flight.readers == 0):
        return False
    if reading:
        if role is Role.CACHED:
            flow.mark(role, status, cache_source=source, cache_level=level)
        else:
            flow.mark(role, status)
        engine.count_saving(entry, semantic=role is Role.SEMANTIC)
        flow.answer_with(entry)
    if flight is not None:  # identical requests waiting on this one get the same answer
        engine.flights.resolve(flight, entry, source, level)
    if flow.engine_request_id is not None:
        await engine.abort_engine([flow.engine_request_id])
    return True


async def _semantic_answer(engine: Any, flow: RequestFlow) -> bool:
    """A verified paraphrase of the request's question, from the request's own scope."""
    key, meta = flow.plan.key, flow.meta
    try:
        assert key is not None and key.question
        report: dict[str, Any] = {}
        match = await engine.similarity_helper.lookup(key.scope, key.question, report=report)
        if match is None:
            if report:  # the verifier's (or the ambiguity rule's) decision, for the metadata
                meta.verification, meta.similarity = report, report.get("similarity")
            return False
        meta.similarity = match.similarity
        meta.verification = {"accepted": match.verdict.accepted, "reason": match.verdict.reason, "question": match.question}
        entry = await engine.cache_manager.get_quiet(match.entry_id) if engine.cache_manager is not None else None
        if entry is None:  # its answer is gone: drop the vector too
            engine.spawn(engine.similarity_helper.remove(match.entry_id))
            return False
        if entry.scope != key.scope:  # the index pointed outside the request's scope: never served
            engine.count("semantic_scope_mismatch")
            meta.verification = {**meta.verification, "accepted": False, "reason": "scope_mismatch"}
            return False
        if not entry_fits(entry, key.max_tokens):
            meta.verification = {**meta.verification, "accepted": False, "reason": "max_tokens"}
            return False
        return await _take_over(engine, flow, entry, Role.SEMANTIC, "semantic_hit", source="semantic")
    except Exception:  # the semantic layer fails open
        logger.exception("semantic lookup failed")
        return False
