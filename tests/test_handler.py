"""EnhancedVLLMHandler, the factory and the legacy layer, on a real engine (tiny model) and real Redis.

One system is built for the module through the global factory; the last test
stops everything and checks that no engine process is left. The legacy test
builds its own (second) engine through the old constructor.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import psutil
import pytest
import pytest_asyncio
from conftest import unique_prefix
from vllm import SamplingParams

from enhanced_llm import CacheConfig, CacheType, HandlerConfig, HandlerNotStartedError, TieredCache, VLLMConfig
from enhanced_llm.factory import EnhancedLLMFactory, create_enhanced_system, get_global_factory
from enhanced_llm.handler import EnhancedVLLMHandler

pytestmark = pytest.mark.asyncio(loop_scope="session")

RESULT_TTL = 3.0
MAX_RESULTS = 16


def vllm_config() -> VLLMConfig:
    return VLLMConfig.for_model("embedded:tiny", kv_cache_memory_bytes=256 << 20, max_model_len=512, max_num_seqs=64)


def greedy(max_tokens: int = 12, **kw) -> SamplingParams:
    return SamplingParams(temperature=0.0, max_tokens=max_tokens, **kw)


def unique_prompt(label: str = "q") -> str:
    return f"{label} {uuid.uuid4().hex[:10]} tell me about handlers"


def engine_children(before: set[int]) -> list[psutil.Process]:
    """Child processes started since ``before``, minus multiprocessing's resource tracker."""
    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if proc.pid not in before and "resource_tracker" not in " ".join(proc.cmdline()):
                found.append(proc)
        except psutil.Error:
            pass
    return found


def alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


async def final(collector) -> object:
    items = [item async for item in collector.get_outputs()]
    assert items and items[-1].finished and all(not i.finished for i in items[:-1])
    return items[-1]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def system(redis_available):
    """(handler, child processes before creation): built by create_enhanced_system, not yet started."""
    assert redis_available, "tests need Redis at 127.0.0.1:6379"
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    handler = await create_enhanced_system(
        vllm_config(),
        CacheConfig(cache_type=CacheType.MULTI, key_prefix=unique_prefix("handler")),
        None,
        HandlerConfig(result_ttl=RESULT_TTL, max_results=MAX_RESULTS),
    )
    yield handler, before
    await get_global_factory().cleanup_all()


@pytest_asyncio.fixture(loop_scope="session")
async def handler(system) -> EnhancedVLLMHandler:
    handler, _ = system
    await handler.start()
    return handler


# -- construction and lifecycle ------------------------------------------------------------------


async def test_global_factory_is_one_object():
    assert get_global_factory() is get_global_factory()
    assert isinstance(get_global_factory(), EnhancedLLMFactory)


async def test_created_handler_refuses_requests_until_started(system):
    created, _ = system
    idle = EnhancedVLLMHandler(created.llm)  # a second, never started handler on the same engine
    with pytest.raises(HandlerNotStartedError):
        await idle.add_request_v2("hello", greedy())
    with pytest.raises(HandlerNotStartedError):
        await idle.add_request("hello", greedy())
    health = await idle.health_check()
    assert health["status"] == "unhealthy" and health["reason"] == "handler not started"
    assert health["components"]["engine"]["status"] == "healthy"


async def test_start_is_idempotent_and_factory_lists_the_instance(handler):
    await handler.start()
    await handler.start()
    assert handler.started
    stats = get_global_factory().get_instance_stats()
    (mine,) = [i for i in stats["instances"] if i["id"] and i["model"] == "embedded:tiny"]
    assert mine["started"] and mine["running"] and mine["active_requests"] == 0
    assert mine["created_at"] <= time.time()
    assert set(mine) == {"id", "model", "started", "running", "created_at", "active_requests"}


# -- add_request_v2 ------------------------------------------------------------------------------


async def test_add_request_v2_streams_then_answers_repeat_from_cache(handler):
    prompt = unique_prompt("v2")
    collector = await handler.add_request_v2(prompt, greedy(16))
    items = [item async for item in collector.aiter()]
    assert len(items) > 1 and items[-1].finished and items[-1].error is None
    first = items[-1]
    assert first.metadata["cache_hit"] is False and len(first.outputs[0].token_ids) == 16

    again = await final(await handler.add_request_v2(prompt, greedy(16), request_id="my-id"))
    assert again.metadata["cache_hit"] is True and again.metadata["cache_source"] == "exact"
    assert again.text == first.text and again.request_output.request_id == "my-id"


async def test_add_request_v2_default_params_and_request_id(handler):
    out = await final(await handler.add_request_v2(unique_prompt("defaults")))
    assert out.error is None and len(out.outputs[0].token_ids) == SamplingParams().max_tokens


async def test_scope_and_cache_options_reach_the_engine_without_touching_params(handler):
    prompt = unique_prompt("options")
    params = greedy(extra_args={"keep": 1})
    await final(await handler.add_request_v2(prompt, params, scope="tenant-a"))
    assert params.extra_args == {"keep": 1}  # the caller's params are not modified
    same_scope = await final(await handler.add_request_v2(prompt, params, scope="tenant-a"))
    other_scope = await final(await handler.add_request_v2(prompt, params, scope="tenant-b"))
    bypass = await final(await handler.add_request_v2(prompt, params, scope="tenant-a", cache="bypass"))
    assert same_scope.metadata["cache_hit"] and not other_scope.metadata["cache_hit"]
    assert not bypass.metadata["cache_hit"] and bypass.metadata["cache_status"] == "bypass"


@pytest.mark.parametrize(
    "prompt,options",
    [("", {}), ("x " * 2000, {}), ("fine", {"cache": "sometimes"}), ("fine", {"no_such_engine_option": 1})],
    ids=["empty-prompt", "too-long", "bad-cache-mode", "unknown-engine-kwarg"],
)
async def test_add_request_v2_failure_arrives_as_one_error_output(handler, prompt, options):
    rejected = handler.get_stats()["rejected_requests"]
    items = [item async for item in (await handler.add_request_v2(prompt, greedy(), **options)).get_outputs()]
    assert len(items) == 1 and items[0].finished and items[0].error
    assert handler.get_stats()["rejected_requests"] == rejected + 1
    assert handler.active_requests == 0
    healthy = await final(await handler.add_request_v2(unique_prompt("after-error"), greedy()))
    assert healthy.error is None


async def test_stats_count_active_and_total_requests(handler):
    total = handler.get_stats()["total_requests"]
    collectors = [await handler.add_request_v2(unique_prompt(f"active{i}"), greedy(64)) for i in range(4)]
    stats = handler.get_stats()
    assert stats["active_requests"] == 4 and stats["total_requests"] == total + 4
    assert get_global_factory().get_instance_stats()["active_requests"] >= 4
    await asyncio.gather(*(final(c) for c in collectors))
    stats = handler.get_stats()
    assert stats["active_requests"] == 0 and stats["llm_running"] is True
    assert stats["cache"]["enabled"] and stats["cache"]["misses"] >= 4
    assert stats["semantic"] == {"enabled": False} and stats["nlp"] == {"enabled": False}
    assert set(stats) >= {"active_requests", "llm_running", "total_requests", "cache", "semantic", "nlp"}


# -- health --------------------------------------------------------------------------------------


async def test_health_check_is_healthy_with_real_probes(handler):
    health = await handler.health_check()
    assert health["status"] == "healthy" and health["started"]
    components = health["components"]
    assert components["engine"]["status"] == "healthy"
    assert components["cache"]["memory"]["status"] == "healthy"
    assert components["cache"]["redis"]["status"] == "healthy"
    assert components["vector_index"]["status"] == "disabled" and components["nlp"]["status"] == "disabled"


async def test_health_reflects_a_stopped_redis(handler, private_redis):
    llm = handler.llm
    original = llm.cache_manager
    llm.cache_manager = TieredCache(CacheConfig(
        cache_type=CacheType.MULTI, redis_port=private_redis.port, key_prefix=unique_prefix("down"), redis_timeout=0.2,
    ))
    try:
        assert (await handler.health_check())["status"] == "healthy"
        private_redis.kill()
        health = await handler.health_check()
        assert health["components"]["cache"]["redis"]["status"] == "unhealthy"
        assert health["components"]["cache"]["memory"]["status"] == "healthy"
        assert health["status"] == "degraded"
        out = await final(await handler.add_request_v2(unique_prompt("redis-down"), greedy()))
        assert out.error is None  # requests are still served
    finally:
        await llm.cache_manager.close()
        llm.cache_manager = original


# -- the legacy polling API ----------------------------------------------------------------------


async def poll(handler, request_id: str, interval: float = 0.005, timeout: float = 60) -> tuple[dict, list[str]]:
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = await handler.get_result(request_id)
        if not seen or seen[-1] != result["status"]:
            seen.append(result["status"])
        if result["status"] in ("COMPLETED", "FAILED"):
            return result, seen
        await asyncio.sleep(interval)
    raise AssertionError(f"no result for {request_id}: {seen}")


async def test_polling_statuses_pending_running_completed(handler):
    # Greedy decoding of a random model can loop on one token that never decodes to text (a special
    # token, a lone UTF-8 continuation byte); sampled tokens of a near-uniform distribution do decode.
    params = SamplingParams(temperature=1.0, seed=7, max_tokens=200, ignore_eos=True, skip_special_tokens=False)
    request_id = await handler.add_request(unique_prompt("poll"), params)
    result, seen = await poll(handler, request_id)
    assert seen[0] == "PENDING" and "RUNNING" in seen and seen[-1] == "COMPLETED", seen
    assert result["request_id"] == request_id and result["error"] is None
    assert result["text"] and result["metadata"]["cache_hit"] is False and result["finished_at"]


async def test_polling_failed_unknown_and_expired(handler):
    failed_id = await handler.add_request("", greedy())
    result, seen = await poll(handler, failed_id)
    assert seen[-1] == "FAILED" and "VLLMValidationError" in result["error"]
    assert await handler.get_result("no-such-id") is None

    done_id = await handler.add_request(unique_prompt("ttl"), greedy(), request_id="ttl-id")
    assert done_id == "ttl-id"
    await poll(handler, done_id)
    await asyncio.sleep(RESULT_TTL + 0.3)
    assert await handler.get_result(done_id) is None  # expired


async def test_polling_keeps_at_most_max_results(handler):
    prompt = unique_prompt("bounded")
    ids = [await handler.add_request(prompt, greedy()) for _ in range(MAX_RESULTS + 4)]
    await poll(handler, ids[-1])
    await asyncio.sleep(0.1)
    kept = [r for r in [await handler.get_result(i) for i in ids] if r is not None]
    assert len(kept) == MAX_RESULTS == handler.get_stats()["legacy"]["results_kept"]
    assert {r["status"] for r in kept} == {"COMPLETED"}


async def test_legacy_classes_warn_and_run_the_old_program(redis_available):
    """Seed 002's old snippets, with only the imports changed (a second engine)."""
    from enhanced_llm.legacy import BaseVLLMHandler, MultiLevelCacheManager, NLPEnhancedVLLMHandler

    with pytest.warns(DeprecationWarning, match="BaseVLLMHandler is deprecated"):
        BaseVLLMHandler(vllm_config=vllm_config())
    with pytest.warns(DeprecationWarning, match="MultiLevelCacheManager"):
        cache_manager = MultiLevelCacheManager(CacheConfig(cache_type=CacheType.MULTI, key_prefix=unique_prefix("legacy")))
    with pytest.warns(DeprecationWarning, match="NLPEnhancedVLLMHandler is deprecated"):
        handler = NLPEnhancedVLLMHandler(
            vllm_config=vllm_config(),
            cache_manager=cache_manager,
            similarity_search_helper=None,
            handler_config=HandlerConfig(),
        )
    with pytest.raises(HandlerNotStartedError):
        await handler.add_request("too early", greedy())
    assert (await handler.health_check())["status"] == "unhealthy"
    await handler.start()
    try:
        prompt, sampling_params = "What is AI, and why does it matter?", greedy()
        request_id = await handler.add_request(prompt=prompt, sampling_params=sampling_params)
        while True:
            result = await handler.get_result(request_id)
            if result and result["status"] == "COMPLETED":
                break
            await asyncio.sleep(0.1)
        assert result["text"]
        assert handler.handler.llm.cache_manager is cache_manager
        assert handler.handler.llm.nlp_analyzer is not None  # the NLP handler switches NLP on
        assert (await handler.health_check())["components"]["nlp"]["status"] == "healthy"
        collector = await handler.add_request_v2(prompt, sampling_params)  # new API through delegation
        assert (await final(collector)).metadata["cache_hit"]
        assert handler.get_stats()["total_requests"] == 2
    finally:
        await handler.stop()
        await handler.stop()
    assert handler.handler.stopped


# -- shutdown: keep last -------------------------------------------------------------------------


async def test_cleanup_all_stops_everything_and_leaves_no_engine_process(system):
    handler, before = system
    await handler.start()
    engines = engine_children(before)
    assert any(alive(p) for p in engines), "the engine core should be a live child process"
    pending = await handler.add_request(unique_prompt("pending"), greedy(400))

    factory = get_global_factory()
    await factory.cleanup_all()
    await factory.cleanup_all()  # idempotent
    await handler.stop()  # and so is stop()

    assert factory.get_instance_stats()["total_instances"] == 0
    assert handler.stopped and not handler.started and handler.get_stats()["llm_running"] is False
    assert pending and handler.get_stats()["legacy"]["results_pending"] == 0  # pollers were cancelled
    with pytest.raises(HandlerNotStartedError):
        await handler.add_request_v2("after stop", greedy())
    with pytest.raises(HandlerNotStartedError):
        await handler.start()
    health = await handler.health_check()
    assert health["status"] == "unhealthy" and health["components"]["engine"]["status"] == "stopped"

    deadline = time.monotonic() + 20
    while any(alive(p) for p in engines) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    assert not [p for p in engines if alive(p)], "engine processes left behind"
