"""EnhancedAsyncLLM: vLLM's AsyncLLM with a response cache in front of the engine core.

Every request, from ``generate()`` or from vLLM's OpenAI server, reaches
:meth:`EnhancedAsyncLLM.add_request`, which runs these stages on the request's
:class:`~.flow.RequestFlow` (the one object that holds everything about it):

1. **prompt**    chat messages rendered; opt-in context enhancement    (``stages.prepare_prompt``)
2. **plan**      our options from ``SamplingParams.extra_args``; cacheable? (``stages.plan``)
3. **validate**  vLLM's own input processing: whatever plain ``AsyncLLM`` rejects is
                 rejected here, before any cache level                  (``stages.validate``)
4. **keys**      canonical exact key, semantic scope, question          (``stages.build_key``)
5. **memory**    exact hit in memory: the answer, the engine untouched
6. **coalesce**  an identical request in flight: read its generation    (``followers``)
7. **redis**     exact hit in Redis (this request leads: identical ones wait for it); while
                 the engine is busy this read races the engine instead (stage 9)
8. **hand off**  ``AsyncLLM.add_request`` with the validated request; outputs reach the
                 flow, which records the answer and feeds coalesced requests
9. **beside**    the Redis read (on a busy engine) and the semantic lookup race the engine
                 (``race``); NLP analysis and
                 similarity search fill metadata (``enrichment``)

Anything that goes wrong in the cache (Redis down, corrupt value, embedding failure) is
counted and the request simply goes on to the engine. Only normally finished answers
(``stop`` / ``length``) are stored.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

from vllm.sampling_params import RequestOutputKind, SamplingParams
from vllm.v1.engine.async_llm import AsyncLLM
from vllm.v1.engine.exceptions import EngineDeadError

from ..answers import AnswerRecorder, progress_output
from ..cache.chat_turns import ChatLayout
from ..cache.entry import CacheEntry
from ..cache.invalidation import Invalidations
from ..cache.keys import KeyBuilder, model_fingerprint
from ..collector import EnhancedOutput, EnhancedRequestOutputCollector
from ..enrichment import Enricher
from ..options import OPTIONS_KEY, RequestOptions
from . import stages
from .construction import EnhancementsMixin
from .contexts import RequestContexts
from .flow import FlowTable, RequestFlow, Role
from .followers import SingleFlight
from .forget import forget_request
from .race import cache_race

__all__ = ["EnhancedAsyncLLM", "RequestOptions", "OPTIONS_KEY"]

logger = logging.getLogger(__name__)


class _QuietHandOff(logging.Filter):
    """vLLM logs once that passing an ``EngineCoreRequest`` to ``add_request`` is deprecated; the
    hand-off of an already validated request is this library's doing, not the caller's."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Passing EngineCoreRequest" not in str(record.msg)


logging.getLogger("vllm.v1.engine.async_llm").addFilter(_QuietHandOff())


class EnhancedAsyncLLM(EnhancementsMixin, AsyncLLM):
    """A drop-in ``AsyncLLM`` that answers repeated (and, optionally, paraphrased) requests from a cache.

    Build it like ``AsyncLLM`` (``from_engine_args``, ``from_vllm_config``) with the optional
    keyword arguments ``cache_config``, ``similarity_config`` and ``handler_config``; or
    seed-style, ``EnhancedAsyncLLM(model="org/name", handler_config=...)``; or
    ``from_custom_config(custom_config=VLLMConfig(...))`` (see :mod:`.construction`).
    """

    def _setup_request_path(self) -> None:
        """The per-request machinery (called once the components exist)."""
        self.keys = KeyBuilder(
            model_fingerprint(self.model_config), namespace=self.cache_config.key_prefix, chat_layout=self._chat_layout()
        )
        self.flows = FlowTable()
        self.flights = SingleFlight(self._store, self._hand_off, self.spawn, self.cache_config.max_entry_tokens)
        self.enricher = Enricher(self.nlp_analyzer, self.similarity_helper, self.handler_config, self.similarity_config)
        #: request id -> its metadata while it runs (and a while after), bounded in bytes
        self.contexts = RequestContexts(self.handler_config.context_cache_bytes, self.handler_config.context_ttl)
        self._background: set[asyncio.Task] = set()
        self._counters: dict[str, int] = {}
        redis = self.cache_manager.redis if self.cache_manager is not None else None
        self.invalidations = Invalidations(
            redis.client if redis is not None else None, self.cache_config.key_prefix,
            timeout=self.cache_config.redis_timeout, retry_after=self.cache_config.redis_retry_after,
            on_key=self._drop_from_memory, on_all=self._clear_memory,
        )
        self._invalidations_started: asyncio.Task | None = None

    # -- the request path ---------------------------------------------------------------------

    async def add_request(  # type: ignore[override]
        self, request_id: str, prompt: Any, params: Any, *args: Any, **kwargs: Any
    ) -> Any:
        """``AsyncLLM.add_request`` with the cache stages in front (see the module docstring)."""
        if stages.passes_through(prompt, params):
            return await super().add_request(request_id, prompt, params, *args, **kwargs)
        flow = RequestFlow(request_id, params, stages.bind_arguments(request_id, prompt, params, args, kwargs))
        self.contexts.put(request_id, flow.meta)
        self._start_components_once()
        self.flows.add(flow)
        try:
            prompt = await stages.prepare_prompt(self, flow, prompt)
            flow.plan = stages.plan(self, flow)
            if flow.plan.cacheable:
                await self._epochs_known()
                await stages.validate(self, flow, prompt)
                stages.build_key(self, flow, prompt)
            flow.meta.cache_status = flow.plan.status
            if flow.plan.key is not None and await self._answer_from_cache(flow):
                return flow.collector
            if self._nobody_waits(flow):
                return flow.collector
            await self._hand_off(flow, prompt)
        except BaseException as exc:
            self._abandon(flow, exc)
            raise
        self._beside_generation(flow)
        return flow.collector

    async def _answer_from_cache(self, flow: RequestFlow) -> bool:
        """Stages memory, coalesce and Redis; True when the request is answered or follows another."""
        cache, plan = self.cache_manager, flow.plan
        assert cache is not None and plan is not None and plan.key is not None
        key = plan.key
        if plan.read:
            if (entry := cache.get_memory(key.exact)) is not None:
                self._answer(flow, entry, "memory")
                return True
            if (flight := self.flights.open(key)) is not None:
                cache.stats.coalesced += 1
                self.flights.follow(flight, flow)
                return True
        # This request leads: identical ones arriving from now on read its generation. A refresh
        # while an identical request runs generates on its own (its flight is not shared).
        self.flights.lead(flow, shared=self.flights.open(key) is None)
        if plan.read and self._redis_races(cache):
            flow.redis_races = True  # read beside the engine: a miss joins the running batch at once
            self.count("redis_reads_beside_engine")
        elif plan.read:
            entry = await cache.get_redis(key.exact)
            if entry is not None:
                self._answer(flow, entry, "redis")
                assert flow.flight is not None
                self.flights.resolve(flow.flight, entry, "exact", "redis")
                return True
            cache.count_miss()
        return False

    def _redis_races(self, cache: Any) -> bool:
        """While the engine is busy, a Redis read would make a miss wait a round trip (and, under
        load, a step of the running batch) before joining it: the read races the engine instead."""
        return (
            self.cache_config.redis_race
            and cache.redis is not None
            and self.output_processor.get_num_unfinished_requests() > 0
        )

    def _nobody_waits(self, flow: RequestFlow) -> bool:
        """The reader left before the hand-off and no identical request waits: nothing to generate."""
        if not flow.reader_gone:
            return False
        if flow.flight is not None and flow.flight.readers == 0 and not flow.flight.done:
            self.flights.fail(flow.flight, _Left())
        return flow.flight is None or flow.flight.readers == 0

    def _answer(self, flow: RequestFlow, entry: CacheEntry, level: str) -> None:
        flow.mark(Role.CACHED, "hit", cache_source="exact", cache_level=level)
        self.count_saving(entry)
        flow.answer_with(entry)

    async def _hand_off(self, flow: RequestFlow, prompt: Any = None) -> None:
        """Stage hand off: the engine generates; the flow records and feeds what it produces."""
        request = flow.engine_request
        if request is not None and flow.flight is not None and flow.output_kind == RequestOutputKind.FINAL_ONLY:
            # Followers may stream: the engine streams, and this reader still gets only the final output.
            request.sampling_params.output_kind = RequestOutputKind.CUMULATIVE
            flow.final_only_reader = True
        kwargs = dict(flow.kwargs)
        if request is not None:
            kwargs["prompt_text"] = flow.prompt_text
            prompt = request
        queue = await super().add_request(flow.request_id, prompt, flow.params, **kwargs)
        flow.engine_request_id = queue.request_id
        self._adopt(queue, flow.collector)
        if flow.reader_gone or flow.abort_requested:  # its reader left while it was being handed off
            if flow.flight is None or flow.flight.readers == 0:
                await self.abort_engine([queue.request_id])

    def _adopt(self, queue: Any, collector: EnhancedRequestOutputCollector) -> None:
        """Make the output processor deliver this request's outputs to ``collector`` instead of ``queue``."""
        processor = self.output_processor
        parent = processor.parent_requests.get(queue.request_id)
        for request_id in list(parent.child_requests) if parent is not None else [queue.request_id]:
            state = processor.request_states.get(request_id)
            if state is not None and state.queue is queue:
                state.queue = collector
        if queue.output is not None:  # outputs that arrived while add_request was awaiting
            pending, queue.output = queue.output, None
            collector.put(pending)

    def _abandon(self, flow: RequestFlow, error: BaseException) -> None:
        """``add_request`` raised (validation, a failed hand-off, cancellation): identical requests
        that were waiting for this one get a new leader; the flow is forgotten."""
        flow.ended = True
        self.flows.remove(flow)
        if flow.flight is not None and flow.flight.driver is flow and not flow.flight.done:
            self.flights.fail(flow.flight, error if isinstance(error, Exception) else _Left())

    def _beside_generation(self, flow: RequestFlow) -> None:
        """Stage beside: the semantic race and the enrichment run while the engine works.

        The lookup starts only now: started before the hand-off, its embedding competed with the
        hand-off for the frontend's core and added ~2 ms to every miss's TTFT (measured)."""
        key, flight = flow.plan.key if flow.plan else None, flow.flight
        text = key.question if key is not None else None
        if text and self.enricher.active:
            task = self.spawn(self._enrich_after_first_output(flow, text, key.scope))
            flow.collector.add_enrichment(task, self.enricher.timeout)
        if flight is not None and flight.driver is flow:
            semantic = bool(text) and self._semantic_usable()
            if flow.redis_races or semantic:
                flow.collector.hold()
                self.spawn(cache_race(self, flow, redis=flow.redis_races, semantic=semantic))
            else:
                self.flights.go_live(flight)  # the engine's outputs are the answer: followers read them

    async def _enrich_after_first_output(self, flow: RequestFlow, text: str, scope: str | None) -> None:
        """NLP and similarity search start once the first output exists: they share the frontend's
        CPU (and the GIL) with tokenization and output processing, and must not delay the first token."""
        await flow.collector.first_put.wait()
        await self.enricher.enrich(flow.collector.metadata, text, scope)
        self.contexts.put(flow.request_id, flow.collector.metadata)  # counted again with what landed

    def _semantic_usable(self) -> bool:
        return (
            self.handler_config.features.enable_similarity_search
            and self.similarity_config.enable_semantic_cache
            and self.semantic_ready
        )

    # -- storing answers ---------------------------------------------------------------------------

    def _store(self, entry: CacheEntry) -> None:
        """A normally finished answer goes to the exact cache, then to the vector index."""
        if self.cache_manager is None or self._closed:
            return
        self.cache_manager.put(entry)
        if entry.question and self.similarity_helper is not None and self.handler_config.features.enable_similarity_search:
            self.spawn(self.similarity_helper.add(entry.scope, entry.question, entry.key))

    def count_saving(self, entry: CacheEntry, semantic: bool = False) -> None:
        if self.cache_manager is not None:
            stats = self.cache_manager.stats
            stats.hits_semantic += semantic
            stats.time_saved_s += entry.generation_seconds
            stats.tokens_saved += entry.num_output_tokens

    def count(self, name: str) -> None:
        self._counters[name] = self._counters.get(name, 0) + 1

    def spawn(self, coro: Any) -> asyncio.Task:
        """Run ``coro`` in the background, keeping a reference until it ends."""
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    def get_request_context(self, request_id: str) -> dict[str, Any] | None:
        """The metadata of a running (or recently finished) request: NLP result, similar questions ..."""
        meta = self.contexts.get(request_id)
        return None if meta is None else meta.as_dict()

    # -- forgetting -------------------------------------------------------------------------------

    async def forget(self, prompt: Any, params: SamplingParams | None = None, *, scope: str | None = None, **kwargs: Any) -> bool:
        """Remove the stored answer to ``generate(prompt, params, **kwargs)`` in tenant ``scope``: its
        exact entry and its vector, here and on every replica sharing the Redis (see
        :mod:`.forget`). True when an entry was found."""
        await self._epochs_known()
        return await forget_request(self, prompt, params, scope, kwargs)

    async def forget_scope(self, scope: str) -> int:
        """Make every answer stored for tenant ``scope`` unreachable, on every replica; the new epoch."""
        await self._epochs_known()
        return await self.invalidations.raise_epoch(scope)

    async def forget_all(self) -> int:
        """Make every stored answer unreachable, on every replica (e.g. after the model's weights
        changed in place, which its fingerprint cannot see); the new global epoch."""
        await self._epochs_known()
        return await self.invalidations.raise_epoch(None)

    async def _epochs_known(self) -> None:
        """Before its first key, a process reads the epochs of forgotten scopes (once, bounded by the
        Redis timeout), so a replica that starts late never serves what others forgot."""
        if self._invalidations_started is None:
            self._invalidations_started = asyncio.get_running_loop().create_task(self.invalidations.start())
        if not self._invalidations_started.done():
            await asyncio.shield(self._invalidations_started)

    def _drop_from_memory(self, key: str) -> None:
        if self.cache_manager is not None and self.cache_manager.memory is not None:
            self.cache_manager.memory.delete(key)

    def _clear_memory(self) -> None:
        if self.cache_manager is not None:
            self.cache_manager.clear_memory()

    # -- abort --------------------------------------------------------------------------------------

    async def abort(self, request_id: Any, internal: bool = False) -> None:
        """Abort requests, as ``AsyncLLM.abort`` does, on every path.

        A request answered from the cache (or already finished) is left alone; a coalesced one
        gets its final output (``finish_reason="abort"``) and stops reading; an engine request
        is aborted once nobody reads it any more, so a leader aborted by its own reader runs on
        for identical requests that read it. All bookkeeping is done before the first await.
        """
        request_ids = [request_id] if isinstance(request_id, str) else list(request_id)
        to_engine: list[str] = []
        for rid in request_ids:
            flows = self.flows.find(rid, internal)
            for flow in flows:
                to_engine.extend(self._abort_flow(flow))
            if internal and not flows:
                to_engine.append(rid)
            elif not internal:  # engine requests under this id that no flow drives (pooling, streaming input)
                to_engine.extend(self._undriven_engine_requests(rid))
        await super().abort(to_engine, internal=True)

    def _abort_flow(self, flow: RequestFlow) -> list[str]:
        """Abort one flow; the engine request ids to abort with it."""
        if flow.ended:
            return []
        flow.abort_requested = True
        if flow.flight is not None:
            leaves_engine_idle = self.flights.leave(flow)
            if flow.flight.driver is not flow:
                return [flow.flight.driver.engine_request_id] if leaves_engine_idle and flow.flight.driver.engine_request_id else []
            if not leaves_engine_idle:
                return []
        if flow.engine_request_id is not None:
            return [flow.engine_request_id]  # vLLM sends the reader its abort output
        flow.reader_gone = True  # not handed off yet: the reader gets its abort output now
        flow.deliver(_empty_abort(flow))
        return []

    def _undriven_engine_requests(self, external_id: str) -> list[str]:
        processor = self.output_processor
        undriven = []
        for internal_id in processor.external_req_ids.get(external_id, ()):
            state = processor.request_states.get(internal_id)
            queue = getattr(state, "queue", None)
            if not (isinstance(queue, EnhancedRequestOutputCollector) and queue.flow is not None):
                undriven.append(internal_id)
        return undriven

    async def abort_engine(self, engine_request_ids: list[str]) -> None:
        """Abort engine requests by their internal ids (bypassing the flows)."""
        await AsyncLLM.abort(self, engine_request_ids, internal=True)

    # -- stats, health, shutdown -------------------------------------------------------------------

    def get_cache_stats(self) -> dict[str, Any]:
        """Counters of the exact cache (hits per level, misses, stores, evictions, Redis errors, coalesced ...)."""
        if self.cache_manager is None:
            return {"enabled": False}
        stats = self.cache_manager.snapshot()
        stats["enabled"] = True
        stats["in_flight"] = len(self.flights)
        stats["elections"] = self.flights.elections
        stats["invalidations"] = dict(self.invalidations.stats)
        stats["request_contexts"] = self.contexts.usage()
        stats.update(self._counters)
        return stats

    def fail_unfinished(self, error: BaseException) -> None:
        """Give every request still waiting ``error`` (shutdown): followers are not vLLM's requests."""
        for flow in self.flows:
            flow.fail(error)

    async def generate_enhanced(
        self, prompt: Any, sampling_params: SamplingParams | None = None, request_id: str | None = None, **kwargs: Any
    ) -> AsyncIterator[EnhancedOutput]:
        """``generate()`` yielding :class:`EnhancedOutput` items (``.text``, ``.finished``, ``.metadata``, ``.error``)."""
        import uuid

        request_id = request_id or uuid.uuid4().hex
        try:
            async for output in self.generate(prompt, sampling_params or SamplingParams(), request_id, **kwargs):
                first = output.outputs[0] if output.outputs else None
                yield EnhancedOutput(first.text if first else "", output.finished, getattr(output, "metadata", {}), None, output)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            yield EnhancedOutput("", True, {}, f"{type(exc).__name__}: {exc}")

    async def cleanup(self) -> None:
        """Close Redis pools and background tasks, then shut the engine down (idempotent, bounded)."""
        if not self._closed:
            self._closed = True
            self.fail_unfinished(EngineDeadError("the engine is shutting down"))
            for task in list(self._background):
                task.cancel()
            await self.invalidations.close()
            await self.close_components()
        await asyncio.to_thread(self.shutdown)  # vLLM's shutdown blocks while the core process exits

    def _chat_layout(self) -> ChatLayout | None:
        """Where the model's chat template puts the user's message (None without a template)."""
        try:
            return ChatLayout.from_tokenizer(self.renderer.tokenizer)
        except Exception:  # noqa: BLE001 - no tokenizer (skip_tokenizer_init) or an odd one
            return None

    def render_chat(self, messages: list[dict[str, Any]]) -> str:
        """Apply the model's chat template (with the generation prompt) to OpenAI-style messages."""
        tokenizer = self.renderer.tokenizer
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


class _Left(Exception):
    """The leader's request ended before its engine request existed (its caller went away)."""


def _empty_abort(flow: RequestFlow) -> Any:
    """The abort output of a request that had not reached the engine yet."""
    return progress_output(
        AnswerRecorder(flow.n, delta=True), flow.request_id, flow.output_kind, flow.lora_request, {},
        flow.prompt_text, flow.prompt_token_ids, abort=True,
    )
