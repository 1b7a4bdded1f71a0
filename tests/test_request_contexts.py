"""The per-request context store (``get_request_context``) is bounded in bytes, and counts what it holds."""

from __future__ import annotations

import tracemalloc
import uuid

import pytest
from helpers import run
from vllm import SamplingParams

from enhanced_llm.engine.contexts import RequestContexts
from enhanced_llm.metadata import OutputMetadata


def _meta(i: int) -> OutputMetadata:
    """Metadata shaped like a request's after NLP, similarity search and the verifier ran."""
    meta = OutputMetadata()
    text = f"question {i}: how do I water the tomatoes in my garden in summer"
    meta.nlp_result = {
        "language": "en", "is_complex": True, "truncated": False,
        "clauses": [{"text": text[:30] + str(i), "function": "main"}, {"text": text[30:] + str(i), "function": "sub"}],
        "entities": [{"text": f"garden {i}", "label": "LOC", "start": 40 + i % 7, "end": 46 + i % 7}],
    }
    meta.similar_results = [{"question": f"similar {i} {j}", "similarity": 0.5 + j / 10, "key": uuid.uuid4().hex} for j in range(3)]
    meta.verification = {"accepted": False, "reason": "content_word", "question": f"candidate {i}"}
    return meta


def test_the_store_counts_what_memory_holds_and_stays_within_its_bound():
    contexts = RequestContexts(max_bytes=4 << 20, ttl=600)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for i in range(300):  # fewer than the bound holds: everything put is still there
            contexts.put(f"req-{uuid.uuid4().hex}", _meta(i))
        held = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    usage = contexts.usage()
    assert usage["entries"] == 300, usage
    assert 0.7 <= held / usage["bytes"] <= 1.15, (held, usage)  # never much less than it holds
    for i in range(3000):  # many more than it holds
        contexts.put(f"req-{i}", _meta(i))
    usage = contexts.usage()
    assert usage["bytes"] <= 4 << 20 and 0 < usage["entries"] < 3000, usage
    assert contexts.get("req-2999") is not None and contexts.get("req-0") is None  # least recently put went first


def test_metadata_that_grows_is_counted_again_and_an_oversized_one_is_not_kept():
    contexts = RequestContexts(max_bytes=256 << 10, ttl=600)
    meta = OutputMetadata()
    contexts.put("r", meta)
    small = contexts.usage()["bytes"]
    meta.similar_results = [{"question": "q" * 1000}]
    contexts.put("r", meta)
    assert contexts.usage()["bytes"] >= small + 1000 and contexts.usage()["entries"] == 1
    meta.similar_results = [{"question": "q" * (64 << 10)}]  # over an eighth of the bound
    contexts.put("r", meta)
    assert contexts.get("r") is None and contexts.usage()["refused"] == 1 and contexts.usage()["bytes"] == 0


@pytest.mark.asyncio(loop_scope="session")
async def test_the_engine_keeps_a_requests_context_in_its_counted_store(enhanced_llm):
    request_id = f"ctx-{uuid.uuid4().hex}"
    await run(enhanced_llm, f"context store {uuid.uuid4().hex[:8]}", SamplingParams(temperature=0.0, max_tokens=4), request_id)
    context = enhanced_llm.get_request_context(request_id)
    assert context is not None and context["cache_hit"] is False
    usage = enhanced_llm.get_cache_stats()["request_contexts"]
    assert usage["entries"] >= 1 and 0 < usage["bytes"] <= usage["bytes_bound"] == enhanced_llm.handler_config.context_cache_bytes
