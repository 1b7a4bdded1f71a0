"""CY-LLM's ``BaseEngine`` contract (seed 000) through ``EngineFactory`` / ``create_engine``, real engines.

Two engine starts for the module: the enhanced engine (with the exact cache on memory +
Redis), created through CY-LLM's old name ``cuda-vllm-async``, and plain vLLM, created
through ``cuda-vllm``; the two canonical names resolve to the same classes (checked
without a start).
"""

from __future__ import annotations

import math
import time
import uuid

import psutil
import pytest

from conftest import REDIS_HOST, REDIS_PORT, TEST_MAX_MODEL_LEN, unique_prefix
from servers import delete_keys

KV_BYTES = 256 << 20
LOAD_ARGS = dict(kv_cache_memory_bytes=KV_BYTES, max_model_len=TEST_MAX_MODEL_LEN, max_num_seqs=16)
CHUNK = 4


def _prompt(label: str) -> str:
    return f"{label} {uuid.uuid4().hex[:8]} tell me about caches"


# -- factory (no engine start) ---------------------------------------------------------------------


def test_factory_type_names(monkeypatch):
    from enhanced_llm.cyllm import (
        DEFAULT_ENGINE_TYPE, BaseEngine, EngineFactory, EnhancedVllmAsyncEngine, VllmAsyncEngine, create_engine,
    )

    expected = {
        "enhanced-vllm-async": EnhancedVllmAsyncEngine, "vllm-async": VllmAsyncEngine,
        "cuda-vllm-async": EnhancedVllmAsyncEngine, "cuda-vllm": VllmAsyncEngine,
    }
    assert sorted(EngineFactory.available()) == sorted(expected)
    for name, cls in expected.items():
        engine = EngineFactory.create(name, stream_chunk_size=2)
        assert type(engine) is cls and isinstance(engine, BaseEngine)
        assert engine.stream_chunk_size == 2 and not engine.loaded
        assert type(create_engine(name.upper())) is cls
    monkeypatch.delenv("CY_LLM_ENGINE", raising=False)
    assert DEFAULT_ENGINE_TYPE == "enhanced-vllm-async" and type(create_engine()) is EnhancedVllmAsyncEngine
    monkeypatch.setenv("CY_LLM_ENGINE", "cuda-vllm")  # CY-LLM's documented roll-back
    assert type(create_engine()) is VllmAsyncEngine
    with pytest.raises(ValueError) as err:
        create_engine("tensorrt")
    assert "tensorrt" in str(err.value) and all(name in str(err.value) for name in expected)
    with pytest.raises(RuntimeError, match="load_model"):
        next(create_engine("vllm-async").infer("x"))


def test_generation_keywords_map_onto_sampling_params(tmp_path):
    from vllm.sampling_params import RequestOutputKind

    from enhanced_llm.cyllm import build_sampling_params, lora_request_for
    from enhanced_llm.cyllm.generation import split_infer_kwargs

    options, cache, adapter, extra = split_infer_kwargs({
        "max_new_tokens": 17, "temperature": 0.3, "top_p": 0.5, "repetition_penalty": 1.2, "adapter_path": str(tmp_path),
        "seed": 7, "cache_scope": "t1", "not_a_field": 1,
    })
    params = build_sampling_params(options, scope=cache["scope"], **extra)
    assert (params.max_tokens, params.temperature, params.top_p, params.repetition_penalty, params.seed) == (17, 0.3, 0.5, 1.2, 7)
    assert params.output_kind == RequestOutputKind.DELTA and params.extra_args == {"enhanced_llm": {"scope": "t1"}}
    defaults = build_sampling_params()
    assert (defaults.max_tokens, defaults.temperature, defaults.top_p, defaults.repetition_penalty) == (256, 0.7, 0.95, 1.0)
    lora = lora_request_for(adapter)
    assert lora.lora_path == str(tmp_path) and lora.lora_int_id == lora_request_for(str(tmp_path)).lora_int_id > 0
    assert lora_request_for(None) is None
    with pytest.raises(ValueError):
        build_sampling_params(type(options)(max_new_tokens=0))


def test_token_chunker_cuts_long_outputs_at_token_counts():
    """A whole answer in one output (a cache hit) is cut into the same token counts as a live stream."""
    from vllm.tokenizers import get_tokenizer

    from enhanced_llm.cyllm import TokenChunker
    from enhanced_llm.models import resolve_model

    tok = get_tokenizer(resolve_model("embedded:tiny"))
    text = "Der Cache antwortet schnell. 缓存回答得很快。 Ça marche — vraiment!"
    ids = tok.encode(text, add_special_tokens=False)
    whole = TokenChunker(3, tok).feed(text, ids, "stop")
    assert "".join(c.text for c in whole) == text
    assert sum(c.num_tokens for c in whole) == len(ids)
    # cut at every 3rd token, except where a character straddles the cut (then 6, 9 ...)
    cuts = range(3, len(ids), 3)
    assert any(tok.decode(ids[:c]).endswith("\ufffd") for c in cuts)  # some cuts fall inside a character
    assert [c.completion_tokens for c in whole] == [*cuts, len(ids)]  # cut every 3 tokens all the same
    # a character incomplete at a cut goes to the next chunk, as vLLM's detokenizer holds it back
    assert [c.offset for c in whole[1:]] == [len(tok.decode(ids[:c]).rstrip("\ufffd")) for c in cuts]
    assert whole[-1].finish_reason == "stop" and [c.index for c in whole] == list(range(len(whole)))
    assert [c.offset for c in whole] == [sum(len(x.text) for x in whole[:i]) for i in range(len(whole))]


# -- the enhanced engine ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def enhanced(redis_available):
    from enhanced_llm import CacheConfig, CacheType
    from enhanced_llm.cyllm import EnhancedVllmAsyncEngine, create_engine

    assert redis_available, "tests need Redis at 127.0.0.1:6379"
    prefix = unique_prefix("cyllm-engine")
    engine = create_engine(
        "cuda-vllm-async", stream_chunk_size=CHUNK,
        cache_config=CacheConfig(cache_type=CacheType.MULTI, redis_url=f"redis://{REDIS_HOST}:{REDIS_PORT}/0", key_prefix=prefix),
    )
    assert isinstance(engine, EnhancedVllmAsyncEngine)
    engine.load_model("embedded:tiny", **LOAD_ARGS)
    yield engine
    engine.unload_model()
    delete_keys(prefix)


def test_true_streaming_in_token_chunks(enhanced):
    tokens = 48
    stream = enhanced.infer_chunks(_prompt("stream"), max_new_tokens=tokens, temperature=0, ignore_eos=True)
    first = next(stream)
    # the first chunk is here while the request is still generating
    assert enhanced.async_engine.get_num_unfinished_requests() >= 1
    rest = list(stream)
    chunks = [first, *rest]
    assert [c.num_tokens for c in chunks] == [CHUNK] * math.ceil(tokens / CHUNK)
    assert chunks[-1].finish_reason == "length" and all(c.finish_reason is None for c in chunks[:-1])
    assert chunks[-1].completion_tokens == tokens and chunks[0].prompt_tokens > 0
    assert not first.metadata["cache_hit"]


def test_infer_yields_strings_and_repeat_is_answered_from_cache(enhanced):
    prompt = _prompt("repeat")
    kwargs = dict(max_new_tokens=24, temperature=0, ignore_eos=True)
    before = enhanced.get_cache_stats()
    first = list(enhanced.infer_chunks(prompt, **kwargs))
    again = list(enhanced.infer_chunks(prompt, **kwargs))
    as_strings = list(enhanced.infer(prompt, **kwargs))
    after = enhanced.get_cache_stats()
    assert not first[0].metadata["cache_hit"]
    assert again[0].metadata["cache_hit"] and again[0].metadata["cache_source"] == "exact"
    assert after["hits_memory"] - before["hits_memory"] == 2
    assert "".join(c.text for c in again) == "".join(c.text for c in first)
    assert [c.num_tokens for c in again] == [c.num_tokens for c in first] == [CHUNK] * 6  # same chunk sizes
    assert all(isinstance(s, str) and s for s in as_strings)
    assert "".join(as_strings) == "".join(c.text for c in first)


def test_closing_early_aborts_the_request(enhanced):
    prompt = _prompt("abort")
    kwargs = dict(max_new_tokens=400, temperature=0, ignore_eos=True)
    # infer_chunks, not infer: infer skips chunks without text, and the random-weight model may
    # start with tokens the detokenizer holds back (an unfinished UTF-8 sequence).
    gen = enhanced.infer_chunks(prompt, **kwargs)
    assert next(gen).num_tokens > 0
    assert enhanced.async_engine.get_num_unfinished_requests() >= 1
    gen.close()
    assert enhanced.async_engine.get_num_unfinished_requests() == 0  # aborted by the time close() returns
    assert enhanced.get_cache_stats()["in_flight"] == 0
    # an aborted answer is not stored: the same request is generated again, not a hit
    again = enhanced.infer_chunks(prompt, **{**kwargs, "max_new_tokens": 8})
    assert not next(again).metadata["cache_hit"]
    again.close()


def test_memory_usage_real_figures(enhanced):
    list(enhanced.infer(_prompt("memory"), max_new_tokens=8, temperature=0, ignore_eos=True))
    usage = enhanced.get_memory_usage()
    assert all(isinstance(v, float) for v in usage.values())
    assert usage["kv_cache_bytes"] == KV_BYTES  # what the engine was given, computed from its blocks and layers
    assert usage["kv_cache_blocks"] > 0 and usage["kv_cache_tokens"] >= TEST_MAX_MODEL_LEN
    assert usage["process_rss_bytes"] > 50e6 and usage["engine_rss_bytes"] > 50e6 and usage["engine_processes"] >= 1
    assert usage["cache_memory_entries"] >= 1 and usage["cache_memory_bytes"] > 0


# -- plain vLLM, the full lifecycle in one test --------------------------------------------------------


def test_plain_engine_lifecycle():
    from enhanced_llm.cyllm import VllmAsyncEngine, create_engine
    from enhanced_llm.cyllm.memory import engine_core_pids

    engine = create_engine("cuda-vllm", stream_chunk_size=CHUNK)
    assert isinstance(engine, VllmAsyncEngine)
    engine.load_model("embedded:tiny", **LOAD_ARGS)
    try:
        with pytest.raises(RuntimeError, match="already loaded"):
            engine.load_model("embedded:tiny")
        chunks = engine.infer_chunks(_prompt("plain"), max_new_tokens=16, temperature=0, ignore_eos=True)
        assert next(chunks).num_tokens == CHUNK and engine.async_engine.get_num_unfinished_requests() == 1
        assert [c.num_tokens for c in chunks] == [CHUNK] * 3
        gen = engine.infer(_prompt("plain-abort"), max_new_tokens=400, temperature=0, ignore_eos=True)
        next(gen)
        gen.close()
        assert engine.async_engine.get_num_unfinished_requests() == 0
        usage = engine.get_memory_usage()
        assert usage["kv_cache_bytes"] == KV_BYTES and "cache_memory_bytes" not in usage
        pids = engine_core_pids(engine.async_engine)
        assert pids and all(psutil.pid_exists(p) for p in pids)
    finally:
        engine.unload_model()
    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in pids)
    assert not engine.loaded and "kv_cache_bytes" not in engine.get_memory_usage()
    engine.unload_model()  # idempotent
    with pytest.raises(RuntimeError):
        next(engine.infer("x"))


def test_enhanced_unload_leaves_no_process(enhanced):
    """Last test of the module: unload the shared engine and check its processes are gone."""
    from enhanced_llm.cyllm.memory import engine_core_pids

    pids = engine_core_pids(enhanced.async_engine)
    assert pids
    started = time.monotonic()
    enhanced.unload_model()
    assert time.monotonic() - started < 120
    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in pids)
    assert not enhanced.loaded and set(enhanced.get_memory_usage()) == {"process_rss_bytes"}
