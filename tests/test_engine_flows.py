"""Request flows through the real engine: election, followers of any kind and n, a failing store, salts."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from helpers import Result, run
from vllm import SamplingParams
from vllm.sampling_params import RequestOutputKind
from vllm.v1.engine.exceptions import EngineGenerateError

pytestmark = pytest.mark.asyncio(loop_scope="session")


def rid() -> str:
    return uuid.uuid4().hex


def unique_prompt(label: str) -> str:
    return f"{label} {uuid.uuid4().hex[:10]} about request flows"


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


async def _first_output_time(llm, prompt, params, request_id, done: asyncio.Event) -> tuple[bool, Result]:
    """(whether ``done`` was still unset at this request's first output, its accumulated result)."""
    result, leader_running = Result(), None
    delta = params.output_kind == RequestOutputKind.DELTA
    async for out in llm.generate(prompt, params, request_id):
        if leader_running is None:
            leader_running = not done.is_set()
        result.num_outputs += 1
        for c in out.outputs:
            if delta:
                result.texts[c.index] = result.texts.get(c.index, "") + c.text
                result.token_ids.setdefault(c.index, []).extend(c.token_ids)
            else:
                result.texts[c.index], result.token_ids[c.index] = c.text, list(c.token_ids)
            result.finish_reasons[c.index] = c.finish_reason
        result.metadata, result.finished = out.metadata, out.finished
    return bool(leader_running), result


async def _until_streaming(llm, prompt, tokens=4):
    for _ in range(3000):
        for flight in llm.flights.all():
            if flight.driver.prompt_text == prompt and flight.live:
                if sum(len(c.token_ids) for c in flight.recorder.choices.values()) >= tokens:
                    return flight
        await asyncio.sleep(0.002)
    raise AssertionError("no live flight")


@pytest.mark.parametrize("leader_kind", [RequestOutputKind.DELTA, RequestOutputKind.FINAL_ONLY], ids=lambda k: k.name)
async def test_followers_of_every_kind_and_n_read_one_generation(enhanced_llm, engine_requests, leader_kind):
    """n=2, seeded: a DELTA, a CUMULATIVE and a FINAL_ONLY request join a running one. The streaming
    ones get outputs before it finishes (also when the leader asked for FINAL_ONLY), the FINAL_ONLY one
    gets exactly one output, all get every choice of the same answer, and the engine ran one request."""
    prompt = unique_prompt("kinds")

    def params(kind):
        return SamplingParams(temperature=0.8, seed=11, n=2, max_tokens=200, ignore_eos=True, output_kind=kind)

    done = asyncio.Event()

    async def leader():
        try:
            return await _first_output_time(enhanced_llm, prompt, params(leader_kind), rid(), done)
        finally:
            done.set()

    lead = asyncio.create_task(leader())
    await _until_streaming(enhanced_llm, prompt)
    kinds = [RequestOutputKind.DELTA, RequestOutputKind.CUMULATIVE, RequestOutputKind.FINAL_ONLY]
    followers = await asyncio.gather(*[_first_output_time(enhanced_llm, prompt, params(k), rid(), done) for k in kinds])
    _, own = await lead
    assert len({r.split("_", 1)[1] for r in engine_requests}) == 1  # one parent request (two choices)
    for kind, (streamed_before_leader_finished, result) in zip(kinds, followers):
        assert result.token_ids == own.token_ids and result.texts == own.texts and len(result.token_ids) == 2
        assert result.metadata["coalesced"] and result.finished
        if kind == RequestOutputKind.FINAL_ONLY:
            assert result.num_outputs == 1
        else:
            assert streamed_before_leader_finished, kind
    if leader_kind == RequestOutputKind.FINAL_ONLY:
        assert own.num_outputs == 1


async def test_a_failed_leader_hands_its_followers_to_one_new_leader(enhanced_llm, monkeypatch):
    """The leader's hand-off fails after identical requests joined it: one of them is elected and
    generates for the others (one more engine request, not one per follower)."""
    prompt, params = unique_prompt("election"), SamplingParams(temperature=0.0, max_tokens=48)
    original, calls = enhanced_llm.engine_core.add_request_async, []

    async def first_fails(request):
        calls.append(request.request_id)
        if len(calls) == 1:
            await asyncio.sleep(0.3)  # identical requests arrive meanwhile and follow this one
            raise RuntimeError("engine core refused the request")
        return await original(request)

    monkeypatch.setattr(enhanced_llm.engine_core, "add_request_async", first_fails)
    elections = enhanced_llm.get_cache_stats()["elections"]
    leader = asyncio.create_task(run(enhanced_llm, prompt, params, rid()))
    await asyncio.sleep(0.05)
    followers = await asyncio.gather(*[run(enhanced_llm, prompt, params, rid()) for _ in range(4)])
    with pytest.raises(EngineGenerateError):  # generate() wraps it, as for plain AsyncLLM
        await leader
    assert len(calls) == 2
    assert all(r.finished and len(r.token_ids[0]) == 48 for r in followers)
    assert len({str(r.token_ids) for r in followers}) == 1
    assert enhanced_llm.get_cache_stats()["elections"] == elections + 1
    assert len(enhanced_llm.flows) == 0 and len(enhanced_llm.flights) == 0


async def test_a_store_that_raises_leaves_no_flight_behind(enhanced_llm, monkeypatch):
    prompt, params = unique_prompt("store-raises"), SamplingParams(temperature=0.0, max_tokens=16)

    def broken_put(entry):
        raise RuntimeError("store down")

    monkeypatch.setattr(enhanced_llm.cache_manager, "put", broken_put)
    results = await asyncio.wait_for(asyncio.gather(*[run(enhanced_llm, prompt, params, rid()) for _ in range(5)]), 30)
    assert all(r.finished for r in results) and len(enhanced_llm.flights) == 0
    again = await asyncio.wait_for(run(enhanced_llm, prompt, params, rid()), 30)  # a new flight, not a dead one
    assert again.finished and not again.metadata["cache_hit"]


async def test_cache_salt_is_not_part_of_the_prompt_text(enhanced_llm):
    """Salt "a" + prompt "bc..." must not be the prompt "abc...": they are different entries."""
    text = unique_prompt("salt")
    params = SamplingParams(temperature=0.0, max_tokens=8)
    await run(enhanced_llm, {"prompt": "a" + text}, params, rid())
    salted = await run(enhanced_llm, {"prompt": text, "cache_salt": "a"}, params, rid())
    assert not salted.metadata["cache_hit"]
    again = await run(enhanced_llm, {"prompt": text, "cache_salt": "a"}, params, rid())
    other_salt = await run(enhanced_llm, {"prompt": text, "cache_salt": "b"}, params, rid())
    assert again.metadata["cache_hit"] and not other_salt.metadata["cache_hit"]


async def test_abort_before_the_engine_and_after_the_answer(enhanced_llm):
    """abort() of a cached answer is a no-op (the answer stays readable); of a follower, it ends
    with finish_reason "abort" and the leader runs on."""
    prompt, params = unique_prompt("abort-paths"), SamplingParams(temperature=0.0, max_tokens=300, ignore_eos=True)
    leader = asyncio.create_task(run(enhanced_llm, prompt, params, "leader-x"))
    await _until_streaming(enhanced_llm, prompt)
    follower = asyncio.create_task(run(enhanced_llm, prompt, params, "follower-x"))
    await asyncio.sleep(0.05)
    await enhanced_llm.abort("follower-x")
    aborted = await follower
    assert aborted.finished and aborted.finish_reasons[0] == "abort"
    full = await leader
    assert full.finish_reasons[0] == "length" and len(full.token_ids[0]) == 300
    await enhanced_llm.flush_cache_writes()
    collector = await enhanced_llm.add_request("cached-x", prompt, params)
    await enhanced_llm.abort("cached-x")
    out = collector.get_nowait()
    assert out is not None and out.finished and out.outputs[0].finish_reason == "length"
