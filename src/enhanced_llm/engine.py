"""EnhancedAsyncLLM: vLLM's AsyncLLM with a response cache in front of the engine core.

Neighbours: ``options`` (per-request control and the plan), ``answers`` (recording an
answer, rebuilding outputs from it), ``enrichment`` (NLP and similarity search),
``cache/`` and ``semantic/`` (the stores).

Every request, from ``generate()`` or from vLLM's OpenAI server, reaches
:meth:`EnhancedAsyncLLM.add_request`, which runs these steps:

1. **plan**     - read our options from ``SamplingParams.extra_args["enhanced_llm"]``
                  and build the request's keys (or decide to pass it through).
2. **exact**    - look the exact key up in memory, then Redis: a hit returns a
                  collector already holding the finished answer.
3. **coalesce** - an identical request already running? Read its tokens as they
                  come (streaming requests) or wait for its answer. A leader
                  aborted by its own reader runs on while followers read it.
4. **semantic** - (when configured) a verified paraphrase answers from the cache;
                  the lookup races the engine, so a miss costs nothing.
5. **hand off** - ``AsyncLLM.add_request``; the collector records the outputs and
                  stores the answer when (and only when) it finished normally.

Anything that goes wrong inside steps 1-4 (Redis down, corrupt value, embedding
failure) is counted and the request simply goes on to the engine.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from cachetools import TTLCache

from vllm.pooling_params import PoolingParams
from vllm.sampling_params import RequestOutputKind, SamplingParams
from vllm.usage.usage_lib import UsageContext
from vllm.v1.engine.async_llm import AsyncLLM
from vllm.v1.engine.exceptions import EngineDeadError, EngineGenerateError
from vllm.v1.executor import Executor

from .answers import AnswerRecorder, FollowerFeed, aborted_output, output_from_entry
from .cache.chat_turns import ChatLayout
from .cache.entry import CacheEntry
from .cache.keys import KeyBuilder, RequestKey, Uncacheable, model_fingerprint
from .cache.redis_store import make_redis_client
from .cache.singleflight import SingleFlight
from .cache.tiered import CacheLevel, TieredCache
from .collector import EnhancedOutput, EnhancedRequestOutputCollector
from .config import CacheConfig, EngineArgsConfig, HandlerConfig, SimilarityConfig, VLLMConfig
from .enrichment import Enricher, context_block, prompt_text
from .metadata import OutputMetadata
from .options import OPTIONS_KEY, CachePlan, RequestOptions

__all__ = ["EnhancedAsyncLLM", "RequestOptions", "OPTIONS_KEY"]  # the latter two re-exported from .options

logger = logging.getLogger(__name__)


@dataclass
class _Enhancements:
    """The enhancement configs and prebuilt components handed to ``__init__``."""

    cache_config: CacheConfig | None = None
    similarity_config: SimilarityConfig | None = None
    handler_config: HandlerConfig | None = None
    cache_manager: TieredCache | None = None
    similarity_helper: Any = None
    nlp_analyzer: Any = None

    def merged(self, other: _Enhancements | None) -> _Enhancements:
        if other is None:
            return self
        return _Enhancements(**{k: getattr(self, k) if getattr(self, k) is not None else getattr(other, k) for k in vars(self)})


# Set by the from_* constructors so that vLLM's own classmethods, which call
# cls(...) without our keyword arguments, still deliver them to __init__.
_PENDING: contextvars.ContextVar[_Enhancements | None] = contextvars.ContextVar("enhanced_llm_pending", default=None)


class EnhancedAsyncLLM(AsyncLLM):
    """A drop-in ``AsyncLLM`` that answers repeated (and, optionally, paraphrased) requests from a cache.

    Build it like ``AsyncLLM`` (``from_engine_args``, ``from_vllm_config``) with the
    optional keyword arguments ``cache_config``, ``similarity_config`` and
    ``handler_config``; or seed-style, ``EnhancedAsyncLLM(model="org/name",
    handler_config=...)``; or ``from_custom_config(custom_config=VLLMConfig(...))``.
    """

    def __init__(
        self,
        vllm_config: Any = None,
        executor_class: Any = None,
        log_stats: bool = False,
        *args: Any,
        model: str | None = None,
        engine_args: dict[str, Any] | None = None,
        cache_config: CacheConfig | None = None,
        similarity_config: SimilarityConfig | None = None,
        handler_config: HandlerConfig | None = None,
        cache_manager: TieredCache | None = None,
        similarity_helper: Any = None,
        nlp_analyzer: Any = None,
        **kwargs: Any,
    ) -> None:
        given = _Enhancements(cache_config, similarity_config, handler_config, cache_manager, similarity_helper, nlp_analyzer)
        options = given.merged(_PENDING.get())
        if vllm_config is None:  # seed style: EnhancedAsyncLLM(model=..., handler_config=...)
            name = model or (options.handler_config.model_name if options.handler_config else None)
            args_config = EngineArgsConfig(**({"model": name} if name else {}), **(engine_args or {}))
            vllm_args = args_config.to_engine_args()
            vllm_config = vllm_args.create_engine_config(UsageContext.ENGINE_CONTEXT)
            executor_class = Executor.get_class(vllm_config)
            log_stats = not vllm_args.disable_log_stats
        super().__init__(vllm_config, executor_class, log_stats, *args, **kwargs)
        self._setup_enhancements(options)

    # -- construction ---------------------------------------------------------------------------

    @classmethod
    def from_vllm_config(cls, vllm_config: Any, *args: Any, **kwargs: Any) -> EnhancedAsyncLLM:
        enhancements, kwargs = _split_enhancements(kwargs)
        token = _PENDING.set(enhancements)
        try:
            return super().from_vllm_config(vllm_config, *args, **kwargs)  # type: ignore[return-value]
        finally:
            _PENDING.reset(token)

    @classmethod
    def from_engine_args(cls, engine_args: Any, *args: Any, **kwargs: Any) -> EnhancedAsyncLLM:
        enhancements, kwargs = _split_enhancements(kwargs)
        token = _PENDING.set(enhancements)
        try:
            return super().from_engine_args(engine_args, *args, **kwargs)  # type: ignore[return-value]
        finally:
            _PENDING.reset(token)

    @classmethod
    def from_custom_config(
        cls,
        custom_config: VLLMConfig | None = None,
        cache_manager: TieredCache | None = None,
        similarity_search_helper: Any = None,
        **kwargs: Any,
    ) -> EnhancedAsyncLLM:
        """Build from the library's :class:`VLLMConfig` (the seed documents' entry point)."""
        engine_args = (custom_config or VLLMConfig()).engine_args.to_engine_args()
        return cls.from_engine_args(
            engine_args, cache_manager=cache_manager, similarity_helper=similarity_search_helper, **kwargs
        )

    def _setup_enhancements(self, options: _Enhancements) -> None:
        self.handler_config = options.handler_config or HandlerConfig()
        self.cache_config = options.cache_config or CacheConfig()
        self.similarity_config = options.similarity_config or SimilarityConfig()
        features = self.handler_config.features
        self.cache_manager: TieredCache | None = None
        if features.enable_caching:
            self.cache_manager = options.cache_manager or TieredCache(self.cache_config)
        self.similarity_helper = options.similarity_helper
        self._semantic_redis: Any = None  # the similarity helper's own Redis pool, when we built it
        if self.similarity_helper is None and features.enable_similarity_search:
            self.similarity_helper = self._build_similarity_helper()
        self.nlp_analyzer = options.nlp_analyzer
        if self.nlp_analyzer is None and features.enable_nlp_enhancement:
            from .nlp import AsyncNLPAnalyzer

            self.nlp_analyzer = AsyncNLPAnalyzer(self.handler_config.nlp)
        self._keys = KeyBuilder(
            model_fingerprint(self.model_config), namespace=self.cache_config.key_prefix, chat_layout=self._chat_layout()
        )
        self._flights = SingleFlight()
        self._followers: dict[str, asyncio.Task] = {}
        self._background: set[asyncio.Task] = set()
        self._start_task: asyncio.Task | None = None
        self._closed = False
        self._enricher = Enricher(self.nlp_analyzer, self.similarity_helper, self.handler_config, self.similarity_config)
        #: request id -> its metadata while it runs (and a while after): the per-request context store
        self._contexts: TTLCache = TTLCache(maxsize=10_000, ttl=600)
        if self.cache_manager is not None and self.similarity_helper is not None:
            self.cache_manager.add_eviction_listener(lambda key, _entry: self._spawn(self.similarity_helper.remove(key)))

    def _build_similarity_helper(self) -> Any:
        """The semantic cache / similarity search, sharing the exact cache's Redis when it has one."""
        from .semantic import SemanticCache

        config = self.cache_config
        if self.cache_manager is not None and self.cache_manager.redis is not None:
            # Its own pool: the index follows other replicas with blocking XREADs (up to ~1 s),
            # longer than the exact cache's socket timeout; each call still has its own timeout.
            self._semantic_redis = make_redis_client(
                url=config.redis_url, host=config.redis_host, port=config.redis_port, db=config.redis_db,
                password=config.redis_password, timeout=config.redis_timeout + 2.0,
            )
        return SemanticCache(
            self.similarity_config,
            redis=self._semantic_redis,
            key_prefix=f"{self.cache_config.key_prefix}:sem:",
            redis_timeout=self.cache_config.redis_timeout,
            entry_ttl=self.cache_config.ttl,
        )

    async def start_enhancements(self) -> None:
        """Load the embedding model and NLP pipelines and hydrate the vector index (idempotent).

        Called by the handler at start; otherwise started in the background by the
        first request, which does not wait for it (the semantic layer joins once ready).
        """
        if self._start_task is None:
            self._start_task = asyncio.get_running_loop().create_task(self._start_components())
        await asyncio.shield(self._start_task)

    async def _start_components(self) -> None:
        for component, method in ((self.similarity_helper, "start"), (self.nlp_analyzer, "warmup")):
            if component is None:
                continue
            try:
                await getattr(component, method)()
            except Exception:  # a component that cannot start is reported by health, not raised
                logger.exception("starting %s failed", type(component).__name__)
            else:
                if component is self.similarity_helper:
                    self.semantic_ready = True

    #: True once the similarity helper has started (model loaded, index hydrated).
    semantic_ready = False

    # -- the request path ---------------------------------------------------------------------

    async def add_request(  # type: ignore[override]
        self, request_id: str, prompt: Any, params: SamplingParams | PoolingParams, *args: Any, **kwargs: Any
    ) -> Any:
        """``AsyncLLM.add_request`` with the cache steps in front (see the module docstring)."""
        meta = OutputMetadata()
        if isinstance(params, PoolingParams) or isinstance(prompt, AsyncGenerator):
            return await super().add_request(request_id, prompt, params, *args, **kwargs)  # untouched
        self._contexts[request_id] = meta
        if not self._closed and self._start_task is None and (self.similarity_helper or self.nlp_analyzer):
            self._spawn(self.start_enhancements())  # first request: load components in the background

        prompt = await self._prepare_prompt(prompt, params, kwargs, meta)
        plan = self._plan(prompt, params, args, kwargs)
        meta.cache_status = plan.status
        cache, key = self.cache_manager, plan.key
        if cache is None or key is None:
            collector = await self._hand_off(request_id, prompt, params, args, kwargs, plan, meta)
            return self._beside_generation(collector, prompt, plan, request_id, kwargs)

        if plan.read:
            if (entry := cache.get_memory(key.exact)) is not None:
                return self._answer_from_cache(request_id, params, kwargs, entry, "memory", meta)
            if (leader := self._flights.join(key.exact)) is not None:
                return self._follow(leader, request_id, prompt, params, args, kwargs, plan, meta)
        # From here on this request leads: identical requests arriving now wait for it.
        flight = self._flights.lead(key.exact) if self._flights.join(key.exact) is None else None
        try:
            if plan.read:
                if (entry := await cache.get_redis(key.exact)) is not None:
                    self._land(key, flight, entry)
                    return self._answer_from_cache(request_id, params, kwargs, entry, "redis", meta)
                cache.count_miss()
            collector = await self._hand_off(request_id, prompt, params, args, kwargs, plan, meta, flight=flight)
        except BaseException:
            self._land(key, flight, None)
            raise
        return self._beside_generation(collector, prompt, plan, request_id, kwargs)

    async def _prepare_prompt(self, prompt: Any, params: SamplingParams, kwargs: dict[str, Any], meta: OutputMetadata) -> Any:
        """Chat messages are rendered with the model's template; opt-in context enhancement is applied."""
        messages = prompt.get("messages") if isinstance(prompt, Mapping) and "messages" in prompt else None
        rendered = self.render_chat(messages) if messages is not None else None
        context, text = self._keys.split(rendered if rendered is not None else prompt_text(prompt))
        if context is None and messages is not None:
            text = _last_user_message(messages)
        added: list[dict[str, Any]] = []
        if text and self.handler_config.features.enable_context_enhancement:
            scope = self._keys.scope(
                params, tenant=RequestOptions.from_params(params).scope,
                lora_request=kwargs.get("lora_request"), kwargs=kwargs, context=context,
            ).hex()
            added = await self._enricher.enhance(text, scope, self.cache_manager)
            meta.context_added = added
        if messages is not None:
            if added:
                return self.render_chat([{"role": "system", "content": context_block(added).strip()}, *messages])
            return rendered
        if added and isinstance(prompt, str):
            return context_block(added) + prompt
        if added:
            return {**prompt, "prompt": context_block(added) + prompt["prompt"]}
        return prompt

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

    def _beside_generation(
        self, collector: EnhancedRequestOutputCollector, prompt: Any, plan: CachePlan, request_id: str, kwargs: dict[str, Any]
    ) -> EnhancedRequestOutputCollector:
        """Step 4 and the enrichment: both run while the engine works; neither delays the hand-off.

        The lookup starts only now: started before the hand-off, its embedding competed with the
        hand-off for the frontend's core and added ~2 ms to every miss's TTFT (measured)."""
        key = plan.key
        text = key.question if key is not None else self._keys.split(prompt_text(prompt))[1]
        if text and self._enricher.active:
            task = self._spawn(self._enrich_after_first_output(collector, text, key.scope if key else None))
            collector.add_enrichment(task, self._enricher.timeout)
        if key is not None and key.question and plan.read and self._semantic_usable():
            collector.hold()
            prompt_info = self._prompt_of(collector.request_id)  # now, while the engine holds the request
            self._spawn(self._semantic_race(collector, key, request_id, kwargs, prompt_info))
        elif isinstance(collector.observer, AnswerRecorder):
            collector.observer.live.set()  # the engine's outputs are the answer: followers may read them
        return collector

    async def _enrich_after_first_output(self, collector: EnhancedRequestOutputCollector, text: str, scope: str | None) -> None:
        """NLP and similarity search start once the first output exists: they share the frontend's
        CPU (and the GIL) with tokenization and output processing, and must not delay the first token."""
        await collector.first_put.wait()
        await self._enricher.enrich(collector.metadata, text, scope)

    def _semantic_usable(self) -> bool:
        return (
            self.handler_config.features.enable_similarity_search
            and self.similarity_config.enable_semantic_cache
            and self.semantic_ready
        )

    async def _semantic_race(
        self, collector: EnhancedRequestOutputCollector, key: RequestKey, request_id: str, kwargs: dict[str, Any],
        prompt_info: tuple[str | None, list[int] | None],
    ) -> None:
        """Step 4: a verified paraphrase answers, if found before the engine's first output is delivered."""
        meta = collector.metadata
        recorder, taken_over = collector.observer, False
        try:
            refusal: dict[str, Any] = {}
            match = await self.similarity_helper.lookup(key.scope, key.question, report=refusal)
            if match is None:
                if refusal:  # the verifier's (or the ambiguity rule's) decision, for the metadata
                    meta.verification, meta.similarity = refusal, refusal.get("similarity")
                return
            meta.similarity = match.similarity
            meta.verification = {"accepted": match.verdict.accepted, "reason": match.verdict.reason, "question": match.question}
            entry = await self.cache_manager.get_quiet(match.entry_id) if self.cache_manager is not None else None
            if entry is None:  # its answer is gone: drop the vector too
                self._spawn(self.similarity_helper.remove(match.entry_id))
                return
            if collector.delivered or meta.finished_at is not None:  # too late: the engine answered first
                return
            engine_request_id = collector.request_id
            prompt, prompt_token_ids = prompt_info
            meta.cache_hit, meta.cache_source, meta.cache_status = True, "semantic", "semantic_hit"
            if self.cache_manager is not None:
                self.cache_manager.stats.hits_semantic += 1
            output = output_from_entry(entry, request_id, kwargs.get("lora_request"), prompt, prompt_token_ids)
            collector.take_over(output)
            taken_over = True
            if isinstance(recorder, AnswerRecorder):
                recorder.resolve(entry)  # identical requests waiting on this one get the same answer
            self._count_saving(entry)
            await self.abort(engine_request_id, internal=True)
        except Exception:  # the semantic layer fails open
            logger.exception("semantic race failed")
        finally:
            collector.release()
            if isinstance(recorder, AnswerRecorder) and not taken_over:
                recorder.live.set()

    def _plan(self, prompt: Any, params: SamplingParams, args: tuple, kwargs: dict[str, Any]) -> CachePlan:
        """Step 1: options and keys. Bad options raise VLLMValidationError; nothing else raises."""
        options = RequestOptions.from_params(params)
        if self.cache_manager is None:
            return CachePlan(None, options, "disabled")
        if options.cache == "bypass":
            self.cache_manager.stats.bypassed += 1
            return CachePlan(None, options, "bypass")
        reason = self._uncacheable_reason(params, args)
        if reason is None:
            try:
                key = self._keys.build(
                    prompt, params, tenant=options.scope, lora_request=kwargs.get("lora_request"), kwargs=kwargs
                )
                return CachePlan(key, options, "miss" if options.cache == "default" else options.cache)
            except Uncacheable as exc:
                reason = exc.reason
            except Exception as exc:  # a key we cannot build is a pass-through, never an error
                reason = f"key_error:{type(exc).__name__}"
        self.cache_manager.stats.uncacheable += 1
        return CachePlan(None, options, f"uncacheable:{reason}")

    def _uncacheable_reason(self, params: SamplingParams, args: tuple) -> str | None:
        if args:
            return "positional_arguments"
        if not isinstance(params, SamplingParams):
            return f"params_type:{type(params).__name__}"
        if params.logprobs is not None or params.prompt_logprobs is not None:
            return "logprobs"  # cached answers do not carry logprobs
        if not self.cache_config.cache_unseeded_sampling and params.temperature > 0 and params.seed is None:
            return "unseeded_sampling"
        return None

    def _answer_from_cache(
        self, request_id: str, params: SamplingParams, kwargs: dict[str, Any],
        entry: CacheEntry, level: CacheLevel, meta: OutputMetadata,
    ) -> EnhancedRequestOutputCollector:
        """Step 2 (hit): a collector holding the finished answer; the engine core is not touched."""
        meta.cache_hit, meta.cache_source, meta.cache_level, meta.cache_status = True, "exact", level, "hit"
        self._count_saving(entry)
        output = output_from_entry(entry, request_id, kwargs.get("lora_request"))
        return EnhancedRequestOutputCollector.finished_with(output, params.output_kind, _local_id(request_id, "cached"), meta)

    def _follow(
        self, leader: asyncio.Future, request_id: str, prompt: Any, params: SamplingParams,
        args: tuple, kwargs: dict[str, Any], plan: CachePlan, meta: OutputMetadata,
    ) -> EnhancedRequestOutputCollector:
        """Step 3: wait for an identical in-flight request instead of generating again."""
        collector = EnhancedRequestOutputCollector(params.output_kind, _local_id(request_id, "follow"), meta)
        task = asyncio.get_running_loop().create_task(
            self._await_leader(leader, collector, request_id, prompt, params, args, kwargs, plan)
        )
        follower_id = collector.request_id
        self._followers[follower_id] = task
        task.add_done_callback(lambda _: self._followers.pop(follower_id, None))
        return collector

    async def _await_leader(
        self, leader: asyncio.Future, collector: EnhancedRequestOutputCollector, request_id: str,
        prompt: Any, params: SamplingParams, args: tuple, kwargs: dict[str, Any], plan: CachePlan,
    ) -> None:
        meta = collector.metadata
        feed: FollowerFeed | None = None
        try:
            if params.n == 1 and params.output_kind != RequestOutputKind.FINAL_ONLY:
                feed = await self._read_along(leader, collector, request_id, params, kwargs, plan)
            entry = await asyncio.shield(leader)
            if feed is not None and feed.delivered:  # the leader's stream reached us as it came
                self._count_coalesced(entry)
                if not feed.finished:
                    collector.put(EngineGenerateError("the identical request this one followed ended early"))
                return
            if entry is not None:
                self._count_coalesced(entry)
                _mark_coalesced(meta)
                collector.put(output_from_entry(entry, request_id, kwargs.get("lora_request")))
                return
            # The leader ended without an answer (aborted or failed): generate ourselves.
            await self._hand_off(request_id, prompt, params, args, kwargs, plan, meta, collector=collector)
        except asyncio.CancelledError:
            if self._closed:  # shutting down: wake the reader as vLLM wakes its own requests
                collector.put(EngineDeadError())
            raise
        except Exception as exc:  # delivered to the reader, as vLLM delivers engine errors
            collector.put(exc)
        finally:
            if feed is not None:
                self._stop_reading_along(feed)

    async def _read_along(
        self, leader: asyncio.Future, collector: EnhancedRequestOutputCollector, request_id: str,
        params: SamplingParams, kwargs: dict[str, Any], plan: CachePlan,
    ) -> FollowerFeed | None:
        """A streaming follower reads the leader's tokens as they come (once they are the answer,
        i.e. after the leader's semantic race); None when the answer is decided first."""
        recorder = self._flights.stream(plan.key.exact) if plan.key is not None else None
        if not isinstance(recorder, AnswerRecorder):
            return None
        live = asyncio.ensure_future(recorder.live.wait())
        try:
            await asyncio.wait({leader, live}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            live.cancel()
        if leader.done():
            return None
        _mark_coalesced(collector.metadata)
        feed = FollowerFeed(recorder, collector, request_id, params.output_kind, kwargs.get("lora_request"))
        return feed if recorder.follow(feed) else None

    def _stop_reading_along(self, feed: FollowerFeed) -> None:
        """Detach a follower; a leader whose own reader left runs only as long as someone reads it."""
        recorder = feed.recorder
        recorder.unfollow(feed)
        if recorder.orphaned and not recorder.followed and recorder.engine_request_id is not None:
            self._spawn(AsyncLLM.abort(self, recorder.engine_request_id, internal=True))

    def _count_coalesced(self, entry: CacheEntry | None) -> None:
        if self.cache_manager is not None:
            self.cache_manager.stats.coalesced += 1
        if entry is not None:
            self._count_saving(entry)

    async def _hand_off(
        self, request_id: str, prompt: Any, params: SamplingParams, args: tuple, kwargs: dict[str, Any],
        plan: CachePlan, meta: OutputMetadata, collector: EnhancedRequestOutputCollector | None = None,
        flight: asyncio.Future | None = None,
    ) -> EnhancedRequestOutputCollector:
        """Step 5: the engine generates; a recorder stores the answer if it finishes normally."""
        recorder = None
        if plan.key is not None and (plan.store or flight is not None):
            on_done = functools.partial(self._recorded, plan.key, flight, plan.store)
            recorder = AnswerRecorder(plan.key, params, on_done, self.cache_config.max_entry_tokens)
        queue = await super().add_request(request_id, prompt, params, *args, **kwargs)
        if collector is None:
            collector = EnhancedRequestOutputCollector(params.output_kind, queue.request_id, meta)
        collector.request_id = queue.request_id
        collector.observer = recorder
        if recorder is not None and flight is not None:
            recorder.engine_request_id = queue.request_id
            self._flights.attach(plan.key.exact, recorder)  # streaming followers read it live
        self._adopt(queue, collector)
        return collector

    def _prompt_of(self, engine_request_id: str) -> tuple[str | None, list[int] | None]:
        """The prompt text and token ids of a running engine request (for n > 1, of its first child)."""
        processor = self.output_processor
        parent = processor.parent_requests.get(engine_request_id)
        for request_id in sorted(parent.child_requests) if parent is not None else [engine_request_id]:
            if (state := processor.request_states.get(request_id)) is not None:
                return state.prompt, state.prompt_token_ids
        return None, None

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

    # -- storing answers ---------------------------------------------------------------------------

    def _recorded(
        self, key: RequestKey, flight: asyncio.Future | None, store: bool, entry: CacheEntry | None, storable: bool
    ) -> None:
        """A recorder's verdict: store the answer (if this request may), and end its flight either way."""
        if entry is None:
            self._count_store_skipped()
        elif store and storable:
            self._store(entry)
        self._land(key, flight, entry)

    def _store(self, entry: CacheEntry) -> None:
        """A normally finished answer goes to the exact cache, then to the vector index."""
        if self.cache_manager is None or self._closed:
            return
        self.cache_manager.put(entry)
        if entry.question and self.similarity_helper is not None and self.handler_config.features.enable_similarity_search:
            self._spawn(self.similarity_helper.add(entry.scope, entry.question, entry.key))

    def _spawn(self, coro: Any) -> asyncio.Task:
        """Run ``coro`` in the background, keeping a reference until it ends."""
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    def get_request_context(self, request_id: str) -> dict[str, Any] | None:
        """The metadata of a running (or recently finished) request: NLP result, similar questions ..."""
        meta = self._contexts.get(request_id)
        return None if meta is None else meta.as_dict()

    def _count_store_skipped(self) -> None:
        if self.cache_manager is not None:
            self.cache_manager.stats.store_skipped += 1

    def _land(self, key: RequestKey, flight: asyncio.Future | None, entry: CacheEntry | None) -> None:
        """End a flight this request led (no-op for None or an already landed flight)."""
        if flight is not None:
            self._flights.land(key.exact, flight, entry)

    def _count_saving(self, entry: CacheEntry) -> None:
        if self.cache_manager is not None:
            self.cache_manager.stats.time_saved_s += entry.generation_seconds
            self.cache_manager.stats.tokens_saved += entry.num_output_tokens

    # -- abort, stats, shutdown -------------------------------------------------------------------

    async def abort(self, request_id: Any, internal: bool = False) -> None:
        """Abort requests; for requests answered from the cache this is a harmless no-op."""
        request_ids = [request_id] if isinstance(request_id, str) else list(request_id)
        to_engine = []
        for rid in request_ids:
            if (task := self._followers.pop(rid, None)) is not None:
                task.cancel()
            elif not self._orphan(rid):
                to_engine.append(rid)
        await super().abort(to_engine, internal)

    def _orphan(self, request_id: str) -> bool:
        """Abort a leader for its own reader only, when coalesced followers are reading its stream:
        the engine request runs on for them and stops when the last one leaves."""
        processor = self.output_processor
        state = processor.request_states.get(request_id)
        if state is None and len(ids := processor.external_req_ids.get(request_id, ())) == 1:
            state = processor.request_states.get(next(iter(ids)))
        collector = getattr(state, "queue", None)
        recorder = getattr(collector, "observer", None)
        if not (isinstance(collector, EnhancedRequestOutputCollector) and isinstance(recorder, AnswerRecorder)):
            return False
        if not recorder.followed or recorder.orphaned:
            return False
        recorder.orphaned = True
        collector.end_for_reader(
            aborted_output(recorder, state.external_req_id, state.output_kind, getattr(state, "lora_request", None))
        )
        return True

    def get_cache_stats(self) -> dict[str, Any]:
        """Counters of the exact cache (hits per level, misses, stores, evictions, Redis errors, coalesced ...)."""
        if self.cache_manager is None:
            return {"enabled": False}
        stats = self.cache_manager.snapshot()
        stats["enabled"] = True
        stats["in_flight"] = len(self._flights)
        return stats

    def get_enhanced_stats(self) -> dict[str, Any]:
        """Cache, semantic and NLP statistics in one dict."""
        return {
            "cache": self.get_cache_stats(),
            "semantic": self.similarity_helper.stats() if self.similarity_helper is not None else {"enabled": False},
            "nlp": self.nlp_analyzer.stats() if self.nlp_analyzer is not None else {"enabled": False},
        }

    async def check_components(self) -> dict[str, Any]:
        """Real probes of each component: engine (core process alive), cache levels, vector index, NLP."""
        components: dict[str, Any] = {}
        try:
            await asyncio.wait_for(self.check_health(), timeout=5)
            components["engine"] = {"status": "healthy", "running": self.is_running}
        except Exception as exc:
            components["engine"] = {"status": "unhealthy", "error": f"{type(exc).__name__}: {exc}"}
        if self.cache_manager is not None:
            components["cache"] = await self.cache_manager.health()
        if self.similarity_helper is not None:
            health = self.similarity_helper.health()
            ok = health.get("started") and health.get("redis") in (None, "ok")
            components["vector_index"] = {"status": "healthy" if ok else "degraded", **health}
        if self.nlp_analyzer is not None:
            components["nlp"] = self.nlp_analyzer.health()
        return components

    async def flush_cache_writes(self) -> None:
        """Wait until background Redis writes have landed (tests, graceful shutdown)."""
        if self.cache_manager is not None:
            await self.cache_manager.flush()

    async def generate_enhanced(
        self, prompt: Any, sampling_params: SamplingParams | None = None, request_id: str | None = None, **kwargs: Any
    ) -> AsyncIterator[EnhancedOutput]:
        """``generate()`` yielding :class:`EnhancedOutput` items (``.text``, ``.finished``, ``.metadata``, ``.error``)."""
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
            for task in [*self._followers.values(), *self._background]:
                task.cancel()
            closers = [self.cache_manager.close() if self.cache_manager is not None else None]
            for component in (self.similarity_helper, self.nlp_analyzer):
                close = getattr(component, "close", None)
                closers.append(close() if close is not None else None)
            if self._semantic_redis is not None:
                closers.append(self._semantic_redis.aclose())
            for closer in closers:
                if asyncio.iscoroutine(closer):
                    try:
                        await asyncio.wait_for(closer, timeout=10)
                    except Exception:  # a component that cannot close must not keep the engine up
                        logger.exception("closing a component failed")
        await asyncio.to_thread(self.shutdown)  # vLLM's shutdown blocks while the core process exits

    def shutdown(self, timeout: float | None = None) -> None:
        """Stop the engine core and its processes (idempotent; ``__del__`` calls it again)."""
        if getattr(self, "_shut_down", False):
            return
        self._shut_down = True
        super().shutdown(timeout)


def _split_enhancements(kwargs: dict[str, Any]) -> tuple[_Enhancements, dict[str, Any]]:
    names = ("cache_config", "similarity_config", "handler_config", "cache_manager", "similarity_helper", "nlp_analyzer")
    picked = {name: kwargs.pop(name) for name in names if name in kwargs}
    return _Enhancements(**picked), kwargs


def _mark_coalesced(meta: OutputMetadata) -> None:
    """The request is answered by an identical one in flight."""
    meta.cache_hit, meta.cache_source, meta.coalesced, meta.cache_status = True, "exact", True, "coalesced"


def _local_id(request_id: str, kind: str) -> str:
    return f"{request_id}-{kind}-{uuid.uuid4().hex[:8]}"


def _last_user_message(messages: Any) -> str | None:
    for message in reversed(messages or []):
        if isinstance(message, Mapping) and message.get("role") == "user" and isinstance(message.get("content"), str):
            return message["content"]
    return None
