"""How an :class:`~enhanced_llm.engine.EnhancedAsyncLLM` is built, started and stopped.

Its constructors are vLLM's (``from_engine_args``, ``from_vllm_config``) with the optional
keyword arguments ``cache_config``, ``similarity_config``, ``handler_config`` (and prebuilt
``cache_manager``, ``similarity_helper``, ``nlp_analyzer``), plus the seed documents' styles:
``EnhancedAsyncLLM(model="org/name", handler_config=...)`` and ``from_custom_config``.
The components (exact cache, semantic cache, NLP analyzer) are built here; the embedding
model and NLP pipelines load in the background on the first request, or in
:meth:`EnhancementsMixin.start_enhancements`.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from dataclasses import dataclass
from typing import Any

from vllm.usage.usage_lib import UsageContext
from vllm.v1.executor import Executor

from ..cache.redis_client import redis_client_from_config
from ..cache.tiered import TieredCache
from ..config import CacheConfig, EngineArgsConfig, HandlerConfig, SimilarityConfig, VLLMConfig

__all__ = ["EnhancementsMixin"]

logger = logging.getLogger(__name__)

_NAMES = ("cache_config", "similarity_config", "handler_config", "cache_manager", "similarity_helper", "nlp_analyzer")


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
        return _Enhancements(**{k: getattr(self, k) if getattr(self, k) is not None else getattr(other, k) for k in _NAMES})

    @classmethod
    def split(cls, kwargs: dict[str, Any]) -> tuple[_Enhancements, dict[str, Any]]:
        picked = {name: kwargs.pop(name) for name in _NAMES if name in kwargs}
        return cls(**picked), kwargs


# Set by the from_* constructors so that vLLM's own classmethods, which call
# cls(...) without our keyword arguments, still deliver them to __init__.
_PENDING: contextvars.ContextVar[_Enhancements | None] = contextvars.ContextVar("enhanced_llm_pending", default=None)


class EnhancementsMixin:
    """Construction, component start-up, health and shutdown of the enhanced engine."""

    #: True once the similarity helper has started (model loaded, index hydrated).
    semantic_ready = False

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
        super().__init__(vllm_config, executor_class, log_stats, *args, **kwargs)  # type: ignore[call-arg]
        self._setup_enhancements(options)

    @classmethod
    def from_vllm_config(cls, vllm_config: Any, *args: Any, **kwargs: Any) -> Any:
        enhancements, kwargs = _Enhancements.split(kwargs)
        token = _PENDING.set(enhancements)
        try:
            return super().from_vllm_config(vllm_config, *args, **kwargs)  # type: ignore[misc]
        finally:
            _PENDING.reset(token)

    @classmethod
    def from_engine_args(cls, engine_args: Any, *args: Any, **kwargs: Any) -> Any:
        enhancements, kwargs = _Enhancements.split(kwargs)
        token = _PENDING.set(enhancements)
        try:
            return super().from_engine_args(engine_args, *args, **kwargs)  # type: ignore[misc]
        finally:
            _PENDING.reset(token)

    @classmethod
    def from_custom_config(
        cls, custom_config: VLLMConfig | None = None, cache_manager: TieredCache | None = None,
        similarity_search_helper: Any = None, **kwargs: Any,
    ) -> Any:
        """Build from the library's :class:`VLLMConfig` (the seed documents' entry point)."""
        engine_args = (custom_config or VLLMConfig()).engine_args.to_engine_args()
        return cls.from_engine_args(engine_args, cache_manager=cache_manager, similarity_helper=similarity_search_helper, **kwargs)

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
            from ..nlp import AsyncNLPAnalyzer

            self.nlp_analyzer = AsyncNLPAnalyzer(self.handler_config.nlp)
        self._start_task: asyncio.Task | None = None
        self._closed = False
        self._setup_request_path()  # type: ignore[attr-defined]
        if self.cache_manager is not None and self.similarity_helper is not None:
            helper = self.similarity_helper
            self.cache_manager.add_eviction_listener(lambda key, _entry: self.spawn(helper.remove(key)))  # type: ignore[attr-defined]

    def _build_similarity_helper(self) -> Any:
        """The semantic cache / similarity search, sharing the exact cache's Redis when it has one."""
        from ..semantic import SemanticCache

        config = self.cache_config
        signing_key = getattr(config, "signing_key", None)
        if signing_key is not None and self.similarity_config.signing_key is None:  # one key signs both caches
            self.similarity_config.signing_key = getattr(signing_key, "get_secret_value", lambda: signing_key)()
        if self.cache_manager is not None and self.cache_manager.redis is not None:
            # Its own pool: the index follows other replicas with blocking XREADs (up to ~1 s),
            # longer than the exact cache's socket timeout; each call still has its own timeout.
            self._semantic_redis = redis_client_from_config(config, timeout=config.redis_timeout + 2.0)
        return SemanticCache(
            self.similarity_config,
            redis=self._semantic_redis,
            key_prefix=f"{self.cache_config.key_prefix}:sem:",
            redis_timeout=self.cache_config.redis_timeout,
            entry_ttl=self.cache_config.ttl,
        )

    # -- components --------------------------------------------------------------------------

    def _start_components_once(self) -> None:
        """The first request loads the components in the background (it does not wait for them)."""
        if not self._closed and self._start_task is None and (self.similarity_helper or self.nlp_analyzer):
            self.spawn(self.start_enhancements())  # type: ignore[attr-defined]

    async def start_enhancements(self) -> None:
        """Load the embedding model and NLP pipelines and hydrate the vector index (idempotent).

        Called by the handler at start; otherwise started in the background by the first
        request, which does not wait for it (the semantic layer joins once ready).
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

    def get_enhanced_stats(self) -> dict[str, Any]:
        """Cache, semantic and NLP statistics in one dict."""
        return {
            "cache": self.get_cache_stats(),  # type: ignore[attr-defined]
            "semantic": self.similarity_helper.stats() if self.similarity_helper is not None else {"enabled": False},
            "nlp": self.nlp_analyzer.stats() if self.nlp_analyzer is not None else {"enabled": False},
        }

    async def check_components(self) -> dict[str, Any]:
        """Real probes of each component: engine (core process alive), cache levels, vector index, NLP."""
        components: dict[str, Any] = {}
        try:
            await asyncio.wait_for(self.check_health(), timeout=5)  # type: ignore[attr-defined]
            components["engine"] = {"status": "healthy", "running": self.is_running}  # type: ignore[attr-defined]
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

    async def close_components(self) -> None:
        """Close the caches' Redis pools and the semantic and NLP components (bounded)."""
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

    def shutdown(self, timeout: float | None = None) -> None:
        """Stop the engine core and its processes (idempotent; ``__del__`` calls it again)."""
        if getattr(self, "_shut_down", False):
            return
        self._shut_down = True
        super().shutdown(timeout)  # type: ignore[misc]
