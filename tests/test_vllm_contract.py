"""vLLM's own AsyncLLM contract, run against plain AsyncLLM and EnhancedAsyncLLM alike.

A port of what vLLM's ``tests/v1/engine/test_async_llm.py`` asserts (load, abort with n=3 and
id reuse, multi-abort, the finished flag, mid-stream cancellation, the abort's final output,
the data-parallel-rank argument, check_health), written for this CPU: the tiny embedded model,
"long" requests of 1,500 tokens instead of 50,000, and vLLM's own shapes kept where they matter
to a cache: up to 100 concurrent requests with the **same prompt and the same seeded sampling
parameters**, some with n=3, some cancelled, some aborted in bulk. That is exactly what single
flight and the exact cache meet first.

Every test runs three times: plain ``AsyncLLM``, ``EnhancedAsyncLLM`` with the exact cache
(memory + Redis), and with the semantic cache on too. They must behave identically apart from
generating less. After each test nothing may be left running: vLLM's own check
(``has_unfinished_requests``) and, for the enhanced engine, no request flow and no open flight.
"""

from __future__ import annotations

import asyncio
import uuid
from unittest.mock import patch

import pytest
import pytest_asyncio
from conftest import engine_args, unique_prefix
from vllm import SamplingParams
from vllm.exceptions import VLLMValidationError
from vllm.lora.request import LoRARequest
from vllm.outputs import RequestOutput
from vllm.sampling_params import RequestOutputKind
from vllm.v1.engine.exceptions import EngineDeadError

pytestmark = pytest.mark.asyncio(loop_scope="module")

MAX_MODEL_LEN = 2048
LONG = 1500  # vLLM uses 50,000 tokens for a request that is still running when it is aborted
KINDS = [RequestOutputKind.DELTA, RequestOutputKind.FINAL_ONLY]
ENGINES = ["plain", "enhanced", "enhanced+semantic"]


def _build(kind: str):
    from vllm.v1.engine.async_llm import AsyncLLM

    from enhanced_llm import CacheConfig, CacheType, EnhancedAsyncLLM, HandlerConfig, SimilarityConfig

    # Large enough that no prompt is prefilled in pieces: the CPU build fails on seeded sampling
    # when a partially prefilled request's sample is discarded ("CPU Generator does not use offset").
    args = engine_args(
        max_model_len=MAX_MODEL_LEN, max_num_seqs=128, kv_cache_memory_bytes=384 << 20, max_num_batched_tokens=8192
    )
    if kind == "plain":
        return AsyncLLM.from_engine_args(args)
    handler_config = HandlerConfig()
    handler_config.features.enable_similarity_search = kind == "enhanced+semantic"
    return EnhancedAsyncLLM.from_engine_args(
        args,
        cache_config=CacheConfig(cache_type=CacheType.MULTI, key_prefix=unique_prefix("contract")),
        similarity_config=SimilarityConfig(),
        handler_config=handler_config,
    )


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=ENGINES)
async def engine(request):
    """One engine per kind for the module (pytest runs the tests grouped by it)."""
    llm = _build(request.param)
    if hasattr(llm, "start_enhancements"):
        await llm.start_enhancements()
    yield llm
    if hasattr(llm, "cleanup"):
        await llm.cleanup()
    else:
        llm.shutdown()


def prompt_for(test: str) -> str:
    """vLLM's prompt, made unique per test so that each test starts with a cold cache."""
    return f"Hello my name is Robert and {test} {uuid.uuid4().hex[:6]}"


def assert_idle(engine) -> None:
    """Nothing left running: vLLM's own check, and none of the enhanced engine's flows or flights."""
    assert not engine.output_processor.has_unfinished_requests()
    if hasattr(engine, "flows"):
        assert len(engine.flows) == 0, [f.request_id for f in engine.flows]
        assert len(engine.flights) == 0


async def until_idle(engine, seconds: float = 5.0) -> None:
    for _ in range(int(seconds / 0.01)):
        if not engine.output_processor.has_unfinished_requests() and not len(getattr(engine, "flows", ())):
            break
        await asyncio.sleep(0.01)
    assert_idle(engine)


async def until_decoding(engine, seconds: float = 60.0) -> None:
    """vLLM's fixed 0.5 s, then on until every running request has its first token (slow CPUs)."""
    await asyncio.sleep(0.5)
    for _ in range(int(seconds / 0.01)):
        states = list(engine.output_processor.request_states.values())
        if states and not any(state.is_prefilling for state in states):
            return
        await asyncio.sleep(0.01)
    pytest.fail("the requests never started decoding")


async def generate(engine, request_id, prompt, output_kind, max_tokens, n=1, cancel_after=None) -> tuple[int, str]:
    """vLLM's helper: count the tokens a request receives (deltas summed, else the latest total)."""
    await asyncio.sleep(0.2)  # vLLM's: generate must not complete too fast for the cancellation tests
    count = 0
    params = SamplingParams(max_tokens=max_tokens, ignore_eos=True, output_kind=output_kind, temperature=0.5, seed=33, n=n)
    async for out in engine.generate(request_id=request_id, prompt=prompt, sampling_params=params):
        tokens = sum(len(o.token_ids) for o in out.outputs)
        count = count + tokens if output_kind == RequestOutputKind.DELTA else tokens
        if cancel_after is not None and count >= cancel_after:
            return count, request_id
        await asyncio.sleep(0.0)
    return count, request_id


@pytest.mark.parametrize("output_kind", KINDS, ids=lambda k: k.name)
async def test_load(engine, output_kind):
    prompt, expected = prompt_for("load"), 10
    tasks = [asyncio.create_task(generate(engine, f"request-{i}", prompt, output_kind, expected)) for i in range(100)]
    done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    for task in pending:
        task.cancel()
    for task in done:
        count, request_id = await task
        assert count == expected, f"{request_id} generated {count}, expected {expected}"
    assert_idle(engine)


@pytest.mark.parametrize("output_kind", KINDS, ids=lambda k: k.name)
async def test_abort(engine, output_kind):
    prompt, expected = prompt_for("abort"), 100
    to_abort, parallel = range(1, 100, 10), range(1, 100, 15)
    tasks = [
        asyncio.create_task(generate(
            engine, f"request-{i}", prompt, output_kind, LONG if i in to_abort else expected, 3 if i in parallel else 1
        ))
        for i in range(100)
    ]
    for i in to_abort:  # the API server cancels requests whose clients disconnect
        tasks[i].cancel()
        await asyncio.sleep(0.1)
    for i, task in enumerate(tasks):
        if i in to_abort:
            with pytest.raises(asyncio.CancelledError):
                result = await task
                pytest.fail(f"request-{i} was cancelled but completed with {result}")
        else:
            count, request_id = await task
            n = 3 if i in parallel else 1
            assert count == expected * n, f"{request_id} generated {count}, expected {expected * n}"
    assert_idle(engine)
    count, _ = await generate(engine, f"request-{to_abort[0]}", prompt, output_kind, expected)  # an aborted id, reused
    assert count == expected
    assert_idle(engine)


@pytest.mark.parametrize("output_kind", KINDS, ids=lambda k: k.name)
async def test_multi_abort(engine, output_kind):
    prompt, expected = prompt_for("multi-abort"), 100
    to_abort, parallel = [5, 10, 15, 20, 25], [5, 15, 30, 35]
    ids = [f"request-{i}" for i in range(50)]
    tasks = [
        asyncio.create_task(generate(
            engine, ids[i], prompt, output_kind, LONG if i in to_abort else expected, 3 if i in parallel else 1
        ))
        for i in range(50)
    ]
    # vLLM sleeps 0.5 s here; on a slow CPU the long requests may not have a token by then. Once the
    # first short request (100 tokens, same batch) is done, every long one is well under way.
    await asyncio.wait([t for i, t in enumerate(tasks) if i not in to_abort], timeout=120, return_when=asyncio.FIRST_COMPLETED)
    await engine.abort([ids[i] for i in to_abort])
    results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 120)
    for i, result in enumerate(results):
        assert isinstance(result, tuple), f"request {i} should have completed, got {result!r}"
        count, request_id = result
        if i in to_abort:
            assert 0 < count < LONG * (3 if i in parallel else 1), f"aborted {request_id} ran to {count} tokens"
        else:
            n = 3 if i in parallel else 1
            assert count == expected * n, f"{request_id} generated {count}, expected {expected * n}"
    assert_idle(engine)


@pytest.mark.parametrize("n", [1, 3])
async def test_finished_flag(engine, n):
    """Only the last output is finished, on the first run and on the (cached) second run alike."""
    prompt = prompt_for(f"finished-{n}")
    params = SamplingParams(max_tokens=100, output_kind=RequestOutputKind.DELTA, temperature=1.0, seed=33, n=n)
    runs = []
    for _ in range(2):
        outputs = [out async for out in engine.generate(request_id="request-33", prompt=prompt, sampling_params=params)]
        assert all(not out.finished for out in outputs[:-1])
        assert outputs[-1].finished
        runs.append(_choices(outputs))
    assert runs[0] == runs[1] and len(runs[0]) == n  # the same answer, whether generated or cached
    assert_idle(engine)


def _choices(outputs: list[RequestOutput]) -> dict[int, list[int]]:
    tokens: dict[int, list[int]] = {}
    for out in outputs:
        for c in out.outputs:
            tokens.setdefault(c.index, []).extend(c.token_ids)
    return tokens


async def test_mid_stream_cancellation(engine):
    prompt, expected = prompt_for("mid-stream"), 20
    ids = [f"request-{i}" for i in range(100)]
    tasks = [
        asyncio.create_task(generate(engine, rid, prompt, RequestOutputKind.DELTA, 1000, cancel_after=expected))
        for rid in ids
    ]
    for count, request_id in await asyncio.gather(*tasks):
        assert count == expected, f"{request_id} generated {count}, expected to cancel after {expected}"
    await until_idle(engine)  # the abandoned generators are closed by the event loop's finalizer
    count, _ = await generate(engine, ids[0], prompt, RequestOutputKind.DELTA, expected)
    assert count == expected
    assert_idle(engine)


async def _collect(engine, request_id, prompt, params, outputs) -> RequestOutput | None:
    final = None
    async for out in engine.generate(request_id=request_id, prompt=prompt, sampling_params=params):
        if not out.finished:
            outputs.append(out)
        final = out
    return final


def _check_abort_output(final, outputs, output_kind) -> None:
    """vLLM's assertions on the final output of an aborted request."""
    assert final is not None and final.finished and len(final.outputs) == 1
    assert final.outputs[0].finish_reason == "abort" and final.outputs[0].stop_reason is None
    assert final.num_cached_tokens >= 0
    if output_kind == RequestOutputKind.DELTA:
        assert sum(len(o.outputs[0].token_ids) for o in outputs) > 0
    else:
        assert len(outputs) == 0 and len(final.outputs[0].token_ids) > 0


@pytest.mark.parametrize("output_kind", KINDS, ids=lambda k: k.name)
async def test_abort_final_output(engine, output_kind):
    params = SamplingParams(max_tokens=LONG, ignore_eos=True, output_kind=output_kind, temperature=0.5, seed=42)
    outputs: list[RequestOutput] = []
    generated = asyncio.create_task(_collect(engine, "test-abort-final-output", prompt_for("abort-final"), params, outputs))
    await until_decoding(engine)
    await engine.abort("test-abort-final-output")
    _check_abort_output(await generated, outputs, output_kind)
    assert_idle(engine)


@pytest.mark.parametrize("output_kind", KINDS, ids=lambda k: k.name)
async def test_abort_final_output_of_an_identical_second_request(engine, output_kind):
    """The same, for the second of two identical requests (coalesced onto the first by the enhanced
    engine): it ends with its own abort output, and the first runs on to its full length."""
    prompt = prompt_for("abort-follower")
    params = SamplingParams(max_tokens=400, ignore_eos=True, output_kind=output_kind, temperature=0.5, seed=42)
    first_outputs: list[RequestOutput] = []
    first = asyncio.create_task(_collect(engine, "first", prompt, params, first_outputs))
    await asyncio.sleep(0.1)
    outputs: list[RequestOutput] = []
    second = asyncio.create_task(_collect(engine, "second", prompt, params, outputs))
    await until_decoding(engine)
    await engine.abort("second")
    _check_abort_output(await second, outputs, output_kind)
    final = await first
    assert final.outputs[0].finish_reason == "length"
    total = sum(len(o.outputs[0].token_ids) for o in [*first_outputs, final]) if output_kind == RequestOutputKind.DELTA else len(final.outputs[0].token_ids)
    assert total == 400
    assert_idle(engine)


async def test_dp_rank_argument(engine):
    prompt = prompt_for("dp-rank")
    params = SamplingParams(max_tokens=100, output_kind=RequestOutputKind.DELTA, temperature=1.0, seed=33)
    async for _ in engine.generate(request_id="request-34", prompt=prompt, sampling_params=params, data_parallel_rank=0):
        pass
    # The identical request is cached by now: an out-of-range rank must still be rejected, as vLLM
    # does (vLLM 0.32 raises VLLMValidationError, which is not a ValueError there).
    with pytest.raises(VLLMValidationError):
        async for _ in engine.generate(request_id="request-35", prompt=prompt, sampling_params=params, data_parallel_rank=1):
            pass
    assert_idle(engine)


async def test_check_health(engine):
    await engine.check_health()
    with patch.object(type(engine), "errored", new_callable=lambda: property(lambda self: True)), pytest.raises(EngineDeadError):
        await engine.check_health()
    await engine.check_health()


# -- beyond vLLM's module: every request plain AsyncLLM rejects is rejected identically, cached or not --


def _invalid_requests():
    """(name, prompt suffix, params, add_request keyword arguments) plain AsyncLLM rejects."""
    ok = dict(max_tokens=8, temperature=0.0)
    return [
        ("dp-rank", "", SamplingParams(**ok), {"data_parallel_rank": 3}),
        ("lora-off", "", SamplingParams(**ok), {"lora_request": LoRARequest("adapter", 1, "/nonexistent")}),
        ("too-long", " word" * 2100, SamplingParams(**ok), {}),
        ("token-out-of-vocab", None, SamplingParams(**ok), {}),
        ("allowed-token-out-of-vocab", "", SamplingParams(allowed_token_ids=[10**6], **ok), {}),
        ("logit-bias-out-of-vocab", "", SamplingParams(logit_bias={10**6: 1.0}, **ok), {}),
    ]


@pytest.mark.parametrize("name,suffix,params,kwargs", _invalid_requests(), ids=[r[0] for r in _invalid_requests()])
async def test_invalid_requests_are_rejected_before_any_cache_level(engine, name, suffix, params, kwargs):
    base = prompt_for("invalid")
    prompt = {"prompt_token_ids": [5, 6, 10**6]} if suffix is None else base + suffix
    valid = SamplingParams(max_tokens=8, temperature=0.0)
    if suffix is not None and name != "too-long":
        async for _ in engine.generate(base, valid, "valid-first"):  # now cached (and coalescable)
            pass
    errors = []
    for attempt in range(2):  # twice: the second would be answered by the cache if it were not validated first
        with pytest.raises(Exception) as info:
            async for _ in engine.generate(prompt, params, f"invalid-{attempt}", **kwargs):
                pass
        errors.append(info.value)
    assert all(type(e) is type(errors[0]) for e in errors)
    assert isinstance(errors[0], (ValueError, VLLMValidationError)), errors[0]
    expected = _PLAIN_ERRORS.setdefault(name, (type(errors[0]), str(errors[0])))  # recorded by the plain engine first
    assert (type(errors[0]), str(errors[0])) == expected
    assert_idle(engine)
    async for last in engine.generate(base, valid, "healthy-after"):
        pass
    assert last.finished


_PLAIN_ERRORS: dict[str, tuple[type, str]] = {}


async def test_a_dead_engine_rejects_cached_requests(engine):
    prompt, params = prompt_for("dead"), SamplingParams(max_tokens=8, temperature=0.0)
    async for _ in engine.generate(prompt, params, "before"):
        pass
    with patch.object(type(engine), "errored", new_callable=lambda: property(lambda self: True)):
        with pytest.raises(EngineDeadError):
            async for _ in engine.generate(prompt, params, "while-dead"):
                pass
    async for last in engine.generate(prompt, params, "after"):
        pass
    assert last.finished
    assert_idle(engine)
