"""EnhancedAsyncLLM's exact cache, through a real vLLM engine (tiny model) and real Redis."""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import pytest
from helpers import run
from vllm import SamplingParams
from vllm.exceptions import VLLMValidationError
from vllm.sampling_params import RequestOutputKind

from enhanced_llm import CacheConfig, CacheType, TieredCache

pytestmark = pytest.mark.asyncio(loop_scope="session")

KINDS = [RequestOutputKind.CUMULATIVE, RequestOutputKind.DELTA, RequestOutputKind.FINAL_ONLY]


def rid() -> str:
    return uuid.uuid4().hex


def greedy(max_tokens: int = 12, **kw) -> SamplingParams:
    return SamplingParams(temperature=0.0, max_tokens=max_tokens, **kw)


def unique_prompt(label: str = "q") -> str:
    return f"{label} {uuid.uuid4().hex[:10]} tell me about caching"


async def test_miss_equals_plain_asyncllm_token_for_token(enhanced_llm, plain_llm):
    prompt = unique_prompt("plain")
    for n, params in [(1, greedy(24)), (2, SamplingParams(temperature=0.8, seed=7, n=2, max_tokens=16))]:
        mine = await run(enhanced_llm, prompt, params, rid())
        theirs = await run(plain_llm, prompt, params, rid())
        assert mine.metadata["cache_hit"] is False
        assert mine.answer() == theirs.answer()
        assert len(mine.texts) == n


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.name)
@pytest.mark.parametrize("n", [1, 2])
async def test_repeat_is_exact_hit_with_identical_answer(enhanced_llm, kind, n):
    params = SamplingParams(temperature=0.0 if n == 1 else 0.9, seed=3, n=n, max_tokens=12, output_kind=kind)
    prompt = unique_prompt(f"{kind.name}{n}")
    first = await run(enhanced_llm, prompt, params, rid())
    second = await run(enhanced_llm, prompt, params, rid())
    assert first.metadata["cache_hit"] is False and first.finished
    assert second.metadata["cache_hit"] is True and second.metadata["cached"] is True
    assert second.metadata["cache_source"] == "exact" and second.metadata["cache_level"] == "memory"
    assert second.num_outputs == 1 and second.finished
    assert second.answer() == first.answer()
    assert len(second.texts) == n and all(r in ("stop", "length") for r in second.finish_reasons.values())
    assert second.metadata["processing_time"] < first.metadata["processing_time"]


async def test_output_kinds_share_one_entry(enhanced_llm):
    prompt = unique_prompt("kinds")
    first = await run(enhanced_llm, prompt, greedy(output_kind=RequestOutputKind.DELTA), rid())
    second = await run(enhanced_llm, prompt, greedy(output_kind=RequestOutputKind.FINAL_ONLY), rid())
    assert second.metadata["cache_hit"] and second.answer() == first.answer()


async def test_token_prompt_and_every_output_affecting_param_are_keyed(enhanced_llm):
    prompt = unique_prompt("params")
    base = await run(enhanced_llm, prompt, greedy(), rid())
    assert not base.metadata["cache_hit"]
    for params in [greedy(max_tokens=13), greedy(stop=["zz"]), greedy(min_tokens=2),
                   greedy(repetition_penalty=1.1), SamplingParams(temperature=0.5, seed=1, max_tokens=12),
                   greedy(extra_args={"other": 1})]:
        res = await run(enhanced_llm, prompt, params, rid())
        assert not res.metadata["cache_hit"], params
    tokens = {"prompt_token_ids": base.prompt_token_ids}
    by_tokens = await run(enhanced_llm, tokens, greedy(), rid())
    assert not by_tokens.metadata["cache_hit"]  # token prompts are their own namespace
    again = await run(enhanced_llm, tokens, greedy(), rid())
    assert again.metadata["cache_hit"] and again.token_ids == base.token_ids


async def test_l2_hit_after_memory_cleared(enhanced_llm):
    prompt = unique_prompt("l2")
    first = await run(enhanced_llm, prompt, greedy(), rid())
    await enhanced_llm.flush_cache_writes()
    enhanced_llm.cache_manager.clear_memory()
    second = await run(enhanced_llm, prompt, greedy(), rid())
    assert second.metadata["cache_hit"] and second.metadata["cache_level"] == "redis"
    assert second.answer() == first.answer()
    third = await run(enhanced_llm, prompt, greedy(), rid())  # promoted back to memory
    assert third.metadata["cache_level"] == "memory"


async def test_busy_engine_reads_redis_beside_the_engine(enhanced_llm, engine_requests):
    """While the engine is busy a miss is handed off at once and Redis is read beside it: a Redis
    answer found before the first output replaces the engine's stream (and its request is aborted)."""
    prompt = unique_prompt("race")
    first = await run(enhanced_llm, prompt, greedy(max_tokens=48), rid())
    await enhanced_llm.flush_cache_writes()
    enhanced_llm.cache_manager.clear_memory()
    busy = asyncio.create_task(run(enhanced_llm, unique_prompt("busy"), greedy(max_tokens=400, ignore_eos=True), rid()))
    while enhanced_llm.output_processor.get_num_unfinished_requests() == 0:
        await asyncio.sleep(0.005)
    before = enhanced_llm.get_cache_stats()
    second = await run(enhanced_llm, prompt, greedy(max_tokens=48), rid())
    after = enhanced_llm.get_cache_stats()
    assert after.get("redis_reads_beside_engine", 0) == before.get("redis_reads_beside_engine", 0) + 1
    assert after["redis_errors"] == before["redis_errors"], "Redis timed out on this machine: the race could not be tested"
    assert second.metadata["cache_hit"] and second.metadata["cache_level"] == "redis"
    assert second.answer() == first.answer() and second.token_ids == first.token_ids
    assert second.finish_reasons == first.finish_reasons
    # the raced engine request was aborted: only the busy one is left
    for _ in range(200):
        if enhanced_llm.output_processor.get_num_unfinished_requests() == 1:
            break
        await asyncio.sleep(0.01)
    assert enhanced_llm.output_processor.get_num_unfinished_requests() == 1
    assert len(engine_requests) == 3  # the first miss, the busy request and the raced one (handed off at once)
    busy.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await busy


async def test_idle_engine_reads_redis_before_the_hand_off(enhanced_llm, engine_requests):
    prompt = unique_prompt("idle-l2")
    await run(enhanced_llm, prompt, greedy(), rid())
    await enhanced_llm.flush_cache_writes()
    enhanced_llm.cache_manager.clear_memory()
    while enhanced_llm.output_processor.get_num_unfinished_requests():
        await asyncio.sleep(0.01)
    before = enhanced_llm.get_cache_stats().get("redis_reads_beside_engine", 0)
    requests_before = len(engine_requests)
    second = await run(enhanced_llm, prompt, greedy(), rid())
    assert second.metadata["cache_level"] == "redis"
    assert enhanced_llm.get_cache_stats().get("redis_reads_beside_engine", 0) == before
    assert len(engine_requests) == requests_before  # a hit before the hand-off costs no engine request


async def test_abort_mid_stream_is_not_cached(enhanced_llm):
    prompt = unique_prompt("abort")
    params = greedy(max_tokens=200)
    stores_before = enhanced_llm.get_cache_stats()["stores"]
    gen = enhanced_llm.generate(prompt, params, rid())
    async for out in gen:
        if len(out.outputs[0].token_ids) >= 2:
            break
    await gen.aclose()  # the client went away: generate() aborts the request
    await asyncio.sleep(0.2)
    assert enhanced_llm.get_cache_stats()["stores"] == stores_before
    again = await run(enhanced_llm, prompt, params, rid())
    assert again.metadata["cache_hit"] is False and len(again.token_ids[0]) == 200


async def test_explicit_abort_of_cached_request_is_noop_and_ids_reusable(enhanced_llm):
    prompt = unique_prompt("ids")
    await run(enhanced_llm, prompt, greedy(), "reused-id")
    cached = await run(enhanced_llm, prompt, greedy(), "reused-id")
    assert cached.metadata["cache_hit"]
    await enhanced_llm.abort("reused-id")
    q = await enhanced_llm.add_request("reused-id", prompt, greedy())
    await enhanced_llm.abort(q.request_id, internal=True)
    other = await run(enhanced_llm, unique_prompt("ids2"), greedy(), "reused-id")
    assert other.finished and not other.metadata["cache_hit"]


@pytest.fixture
def engine_requests(enhanced_llm, monkeypatch):
    """The ids of the requests that reach the engine core during a test."""
    sent = []
    original = enhanced_llm.engine_core.add_request_async

    async def counting(request):
        sent.append(request.request_id)
        return await original(request)

    monkeypatch.setattr(enhanced_llm.engine_core, "add_request_async", counting)
    return sent


async def test_concurrent_identical_requests_make_one_engine_request(enhanced_llm, engine_requests):
    sent = engine_requests
    prompt = unique_prompt("flight")
    before = enhanced_llm.get_cache_stats()["coalesced"]
    results = await asyncio.gather(*[run(enhanced_llm, prompt, greedy(32), rid()) for _ in range(50)])
    assert len(sent) == 1
    assert {r.answer() == results[0].answer() for r in results} == {True}
    assert enhanced_llm.get_cache_stats()["coalesced"] - before == 49
    assert sum(r.metadata["coalesced"] for r in results) == 49
    assert sum(r.metadata["cache_hit"] for r in results) == 49


async def test_followers_fall_back_when_leader_is_aborted(enhanced_llm):
    prompt = unique_prompt("fallback")
    params = greedy(max_tokens=64)
    leader = asyncio.create_task(run(enhanced_llm, prompt, params, rid()))
    await asyncio.sleep(0.05)
    followers = [asyncio.create_task(run(enhanced_llm, prompt, params, rid())) for _ in range(3)]
    await asyncio.sleep(0.01)
    leader.cancel()
    results = await asyncio.gather(*followers)
    assert all(r.finished and len(r.token_ids[0]) == 64 for r in results)


async def _streaming_leader(llm, prompt, params, min_tokens=4):
    """The flight of the in-flight request for ``prompt``, once it has produced ``min_tokens``."""
    for _ in range(2000):
        for flight in llm.flights.all():
            if flight.driver.prompt_text == prompt and flight.live:
                if sum(len(c.token_ids) for c in flight.recorder.choices.values()) >= min_tokens:
                    return flight
        await asyncio.sleep(0.002)
    raise AssertionError("the leader never started streaming")


async def _until(predicate, seconds=10.0):
    for _ in range(int(seconds / 0.002)):
        if predicate():
            return
        await asyncio.sleep(0.002)
    raise AssertionError("condition not reached")


async def _first_output_then_rest(llm, prompt, params, request_id, leader_done=None):
    """(seconds to the first output, whether ``leader_done`` was set by then, the accumulated Result)."""
    from helpers import Result

    start, first_at, leader_finished_first = asyncio.get_running_loop().time(), None, None
    result = Result()
    async for out in llm.generate(prompt, params, request_id):
        if first_at is None:
            first_at = asyncio.get_running_loop().time() - start
            leader_finished_first = leader_done.is_set() if leader_done is not None else None
        for c in out.outputs:
            result.texts[c.index] = result.texts.get(c.index, "") + c.text
            result.token_ids.setdefault(c.index, []).extend(c.token_ids)
            result.finish_reasons[c.index] = c.finish_reason
        result.metadata, result.finished = out.metadata, out.finished
    return first_at, leader_finished_first, result


async def test_streaming_followers_read_the_leaders_tokens_as_they_come(enhanced_llm, engine_requests):
    sent = engine_requests
    prompt, params = unique_prompt("read-along"), greedy(160, output_kind=RequestOutputKind.DELTA)
    leader_done = asyncio.Event()

    async def leader():
        try:
            return await _first_output_then_rest(enhanced_llm, prompt, params, rid())
        finally:
            leader_done.set()

    lead = asyncio.create_task(leader())
    await _streaming_leader(enhanced_llm, prompt, params, min_tokens=8)  # part-way through its answer
    follower = await _first_output_then_rest(enhanced_llm, prompt, params, rid(), leader_done)
    _, _, own = await lead
    _, leader_finished_before_followers_first_output, mine = follower
    assert leader_finished_before_followers_first_output is False  # it streamed, it did not wait
    assert mine.token_ids == own.token_ids and mine.texts == own.texts and len(mine.token_ids[0]) == 160
    assert mine.metadata["coalesced"] and mine.metadata["cache_status"] == "coalesced"
    assert len(sent) == 1


async def test_a_leader_aborted_by_its_reader_runs_on_for_its_followers(enhanced_llm):
    prompt = unique_prompt("orphan")
    params = greedy(400, output_kind=RequestOutputKind.DELTA)
    reference = await run(enhanced_llm, prompt, greedy(400, extra_args={"enhanced_llm": {"cache": "bypass"}}), rid())
    leader_id = rid()
    leader = asyncio.create_task(run(enhanced_llm, prompt, params, leader_id))
    flight = await _streaming_leader(enhanced_llm, prompt, params)
    followers = [asyncio.create_task(run(enhanced_llm, prompt, params, rid())) for _ in range(2)]
    await _until(lambda: len(flight.followers) == 2)
    await enhanced_llm.abort(leader_id)  # the leader's own client gives up
    aborted = await asyncio.wait_for(leader, 10)
    assert aborted.finished and aborted.finish_reasons[0] == "abort"
    results = await asyncio.gather(*followers)
    assert all(r.token_ids == reference.token_ids and r.finish_reasons[0] == "length" for r in results)
    await enhanced_llm.flush_cache_writes()
    again = await run(enhanced_llm, prompt, params, rid())  # the answer finished normally: it was stored
    assert again.metadata["cache_hit"] and again.token_ids == reference.token_ids


async def test_the_engine_request_stops_when_its_last_reader_leaves(enhanced_llm):
    prompt = unique_prompt("all-gone")
    params = greedy(400, output_kind=RequestOutputKind.DELTA)
    leader_id, follower_id = rid(), rid()
    leader = asyncio.create_task(run(enhanced_llm, prompt, params, leader_id))
    flight = await _streaming_leader(enhanced_llm, prompt, params)
    follower = asyncio.create_task(run(enhanced_llm, prompt, params, follower_id))
    await _until(lambda: bool(flight.followers))
    await enhanced_llm.abort(leader_id)
    await asyncio.sleep(0.05)
    assert enhanced_llm.output_processor.get_num_unfinished_requests() == 1  # runs on for the follower
    follower.cancel()
    await asyncio.gather(leader, follower, return_exceptions=True)
    for _ in range(100):
        if enhanced_llm.output_processor.get_num_unfinished_requests() == 0:
            break
        await asyncio.sleep(0.02)
    assert enhanced_llm.output_processor.get_num_unfinished_requests() == 0
    stores = enhanced_llm.get_cache_stats()["stores"]
    await enhanced_llm.flush_cache_writes()
    assert enhanced_llm.get_cache_stats()["stores"] == stores  # an aborted answer is never stored
    assert not (await run(enhanced_llm, prompt, greedy(8), rid())).metadata["cache_hit"]


async def test_tenant_scopes_never_share_entries(enhanced_llm):
    prompt = unique_prompt("tenant")

    def scoped(scope):
        return greedy(extra_args={"enhanced_llm": {"scope": scope}})

    a1 = await run(enhanced_llm, prompt, scoped("tenant-a"), rid())
    b1 = await run(enhanced_llm, prompt, scoped("tenant-b"), rid())
    a2 = await run(enhanced_llm, prompt, scoped("tenant-a"), rid())
    unscoped = await run(enhanced_llm, prompt, greedy(), rid())
    assert not a1.metadata["cache_hit"] and not b1.metadata["cache_hit"]
    assert a2.metadata["cache_hit"] and not unscoped.metadata["cache_hit"]


async def test_bypass_refresh_no_store(enhanced_llm):
    def mode(m):
        return greedy(extra_args={"enhanced_llm": {"cache": m}})

    prompt = unique_prompt("modes")
    nostore = await run(enhanced_llm, prompt, mode("no-store"), rid())
    assert not nostore.metadata["cache_hit"]
    assert not (await run(enhanced_llm, prompt, greedy(), rid())).metadata["cache_hit"]  # nothing was stored
    assert (await run(enhanced_llm, prompt, mode("no-store"), rid())).metadata["cache_hit"]  # reads still work
    bypass = await run(enhanced_llm, prompt, mode("bypass"), rid())
    assert not bypass.metadata["cache_hit"] and bypass.metadata["cache_status"] == "bypass"
    stores = enhanced_llm.get_cache_stats()["stores"]
    refresh = await run(enhanced_llm, prompt, mode("refresh"), rid())
    assert not refresh.metadata["cache_hit"] and enhanced_llm.get_cache_stats()["stores"] == stores + 1
    prompt2 = unique_prompt("bypass-only")
    await run(enhanced_llm, prompt2, mode("bypass"), rid())
    assert not (await run(enhanced_llm, prompt2, greedy(), rid())).metadata["cache_hit"]


async def test_uncacheable_requests_pass_through(enhanced_llm):
    prompt = unique_prompt("logprobs")
    for _ in range(2):
        res = await run(enhanced_llm, prompt, greedy(logprobs=2), rid())
        assert not res.metadata["cache_hit"] and res.metadata["cache_status"] == "uncacheable:logprobs"


async def test_redis_outage_mid_run_fails_open_and_recovers(enhanced_llm, private_redis):
    config = CacheConfig(cache_type=CacheType.MULTI, redis_port=private_redis.port, key_prefix="outage",
                         redis_timeout=0.2, redis_retry_after=0.3)
    original = enhanced_llm.cache_manager
    enhanced_llm.cache_manager = TieredCache(config)
    try:
        await run(enhanced_llm, unique_prompt("before"), greedy(), rid())
        await enhanced_llm.flush_cache_writes()
        private_redis.kill()
        results = await asyncio.gather(*[run(enhanced_llm, unique_prompt("down"), greedy(), rid()) for _ in range(8)])
        await enhanced_llm.flush_cache_writes()
        assert all(r.finished for r in results)
        assert enhanced_llm.get_cache_stats()["redis_errors"] > 0
        private_redis.start()
        await asyncio.sleep(0.4)
        prompt = unique_prompt("after")
        await run(enhanced_llm, prompt, greedy(), rid())
        await enhanced_llm.flush_cache_writes()
        enhanced_llm.cache_manager.clear_memory()
        res = await run(enhanced_llm, prompt, greedy(), rid())
        assert res.metadata["cache_level"] == "redis"
    finally:
        await enhanced_llm.cache_manager.close()
        enhanced_llm.cache_manager = original


async def test_corrupt_or_foreign_redis_value_is_a_miss_and_deleted(enhanced_llm):
    prompt = unique_prompt("corrupt")
    await run(enhanced_llm, prompt, greedy(), rid())
    await enhanced_llm.flush_cache_writes()
    cache = enhanced_llm.cache_manager
    (key,) = [k for k, (entry, _) in cache.memory._data.items() if entry.prompt == prompt]
    redis_key = cache.redis.entry_key(key)
    for garbage in (b"not ours", b"ELC\x01\x00\xff\xff", cache.codec.encode(cache.memory.get(key).__class__(
            key="someone-else", scope="x", prompt="p", prompt_token_ids=[1], completions=[]))):
        await cache.redis.client.set(redis_key, garbage)
        cache.clear_memory()
        corrupt_before = cache.stats.corrupt_entries
        res = await run(enhanced_llm, prompt, greedy(), rid())
        assert not res.metadata["cache_hit"] and res.finished
        assert cache.stats.corrupt_entries == corrupt_before + 1
        await cache.flush()


async def _error_of(llm, prompt, params):
    try:
        await run(llm, prompt, params, rid())
    except Exception as exc:  # noqa: BLE001 - we compare the types
        return exc
    return None


@pytest.mark.parametrize(
    "prompt,params",
    [
        ("", lambda: greedy()),
        ("x " * 2000, lambda: greedy()),  # longer than max_model_len
        (12345, lambda: greedy()),
        ({"prompt_token_ids": ["a", "b"]}, lambda: greedy()),
        ({"prompt_token_ids": [10**6]}, lambda: greedy()),  # outside the vocabulary
    ],
    ids=["empty", "too-long", "int-prompt", "bad-token-ids", "token-out-of-vocab"],
)
async def test_bad_input_raises_like_asyncllm_and_caches_nothing(enhanced_llm, plain_llm, prompt, params):
    stores = enhanced_llm.get_cache_stats()["stores"]
    mine = await _error_of(enhanced_llm, prompt, params())
    theirs = await _error_of(plain_llm, prompt, params())
    assert theirs is not None, "plain AsyncLLM accepted it"
    assert type(mine) is type(theirs), (mine, theirs)
    assert enhanced_llm.get_cache_stats()["stores"] == stores
    healthy = await run(enhanced_llm, unique_prompt("after-error"), greedy(), rid())
    assert healthy.finished


@pytest.mark.parametrize("options", [{"cache": "sometimes"}, {"scope": 5}, {"nope": 1}, "bypass"])
async def test_bad_enhanced_options_raise_validation_error(enhanced_llm, options):
    with pytest.raises(VLLMValidationError):
        await run(enhanced_llm, "hello", greedy(extra_args={"enhanced_llm": options}), rid())


async def test_invalid_sampling_params_raise_at_construction():
    with pytest.raises(VLLMValidationError):
        SamplingParams(temperature=-1.0)
