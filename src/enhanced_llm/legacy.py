"""Compatibility with the old handler API, so existing programs run after changing imports only.

* :class:`BaseVLLMHandler` and :class:`NLPEnhancedVLLMHandler`: the old class names
  with the old constructor (``vllm_config=, cache_manager=, similarity_search_helper=,
  handler_config=``). They warn (``DeprecationWarning``) and delegate to a new handler
  built by the global factory at ``start()``. :class:`MultiLevelCacheManager` is the old
  name of :class:`~enhanced_llm.cache.tiered.TieredCache`.
* The old polling pair ``add_request`` / ``get_result`` is on every
  :class:`~enhanced_llm.handler.EnhancedVLLMHandler` (from
  :class:`~enhanced_llm.polling.LegacyPollingMixin`, re-exported here); the old classes
  delegate it to their new handler.

This module builds on the handler and the factory; neither imports it.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

from .cache.tiered import TieredCache
from .config import CacheConfig, HandlerConfig, SimilarityConfig, VLLMConfig
from .errors import HandlerNotStartedError
from .polling import LegacyPollingMixin, ResultStatus

if TYPE_CHECKING:
    from .handler import EnhancedVLLMHandler

__all__ = [
    "ResultStatus",
    "LegacyPollingMixin",
    "BaseVLLMHandler",
    "NLPEnhancedVLLMHandler",
    "MultiLevelCacheManager",
]


# -- the old class names ----------------------------------------------------------------------


class MultiLevelCacheManager(TieredCache):
    """Deprecated name of :class:`~enhanced_llm.cache.tiered.TieredCache` (memory + Redis)."""

    def __init__(self, config: CacheConfig | None = None, redis_client: Any = None) -> None:
        _deprecated("MultiLevelCacheManager", "TieredCache (or pass cache_config to create_enhanced_system)")
        super().__init__(config or CacheConfig(), redis_client)


class BaseVLLMHandler:
    """Deprecated: the old caching handler. Use ``create_enhanced_system()`` instead.

    Accepts the old constructor. ``start()`` builds an :class:`EnhancedVLLMHandler` through
    the global factory and starts it; every method (and attribute) then delegates to it.
    """

    _enable_nlp = False

    def __init__(
        self,
        vllm_config: VLLMConfig | None = None,
        cache_manager: TieredCache | None = None,
        similarity_search_helper: Any = None,
        handler_config: HandlerConfig | None = None,
        *,
        cache_config: CacheConfig | None = None,
        similarity_config: SimilarityConfig | None = None,
    ) -> None:
        _deprecated(type(self).__name__, "enhanced_llm.factory.create_enhanced_system() and add_request_v2()")
        if cache_manager is not None and not isinstance(cache_manager, TieredCache):
            raise TypeError(f"cache_manager must be a TieredCache (MultiLevelCacheManager), not {type(cache_manager).__name__}")
        self.vllm_config = vllm_config or VLLMConfig()
        self.cache_manager = cache_manager
        self.similarity_search_helper = similarity_search_helper
        self.handler_config = (handler_config or HandlerConfig()).model_copy(deep=True)
        if self._enable_nlp:
            self.handler_config.features.enable_nlp_enhancement = True
        self.cache_config = cache_config or (cache_manager.config if cache_manager is not None else None)
        self.similarity_config = similarity_config
        self._handler: EnhancedVLLMHandler | None = None

    @property
    def handler(self) -> EnhancedVLLMHandler:
        """The new handler this one delegates to (exists after ``start()``)."""
        if self._handler is None:
            raise HandlerNotStartedError("call `await handler.start()` first")
        return self._handler

    async def start(self) -> None:
        """Build the engine (first call) and start the new handler (idempotent)."""
        if self._handler is None:
            from .factory import get_global_factory

            self._handler = await get_global_factory().create_system(
                self.vllm_config, self.cache_config, self.similarity_config, self.handler_config,
                cache_manager=self.cache_manager, similarity_helper=self.similarity_search_helper,
            )
        await self._handler.start()

    async def stop(self) -> None:
        if self._handler is not None:
            await self._handler.stop()

    async def __aenter__(self) -> BaseVLLMHandler:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def add_request(self, prompt: Any, sampling_params: Any = None, request_id: str | None = None, **options: Any) -> str:
        return await self.handler.add_request(prompt, sampling_params, request_id, **options)

    async def get_result(self, request_id: str) -> dict[str, Any] | None:
        return await self.handler.get_result(request_id)

    async def health_check(self) -> dict[str, Any]:
        if self._handler is None:
            return {"status": "unhealthy", "components": {}, "started": False, "reason": "handler not started"}
        return await self._handler.health_check()

    def get_stats(self) -> dict[str, Any]:
        return self.handler.get_stats()

    def __getattr__(self, name: str) -> Any:  # anything else the new handler has
        handler = self.__dict__.get("_handler")
        if handler is None or name.startswith("_"):
            raise AttributeError(f"{type(self).__name__!s} has no attribute {name!r} (before start())")
        return getattr(handler, name)


class NLPEnhancedVLLMHandler(BaseVLLMHandler):
    """Deprecated: the old NLP handler; as :class:`BaseVLLMHandler` with NLP analysis switched on."""

    _enable_nlp = True


def _deprecated(old: str, new: str, stacklevel: int = 3) -> None:
    warnings.warn(f"{old} is deprecated; use {new} (see docs/migration_guide.md)", DeprecationWarning, stacklevel=stacklevel)
