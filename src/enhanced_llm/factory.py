"""Build complete systems (engine + components + handler) and keep track of them.

``handler = await create_enhanced_system(vllm_config, cache_config, similarity_config,
handler_config)`` is the one-call entry point: it builds one :class:`EnhancedAsyncLLM`
(whose semantic and NLP components exist only when their feature flag is on), wraps
it in an :class:`EnhancedVLLMHandler` and registers it with the process-wide
:class:`EnhancedLLMFactory`. Then ``await handler.start()``; at exit
``await handler.stop()`` or ``await get_global_factory().cleanup_all()``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from .cache.tiered import TieredCache
from .config import CacheConfig, HandlerConfig, SimilarityConfig, VLLMConfig
from .engine import EnhancedAsyncLLM
from .handler import EnhancedVLLMHandler

__all__ = ["EnhancedLLMFactory", "create_enhanced_system", "get_global_factory"]

logger = logging.getLogger(__name__)


@dataclass
class _Instance:
    id: str
    model: str  #: the model as configured ("embedded:tiny", "org/name", a path)
    handler: EnhancedVLLMHandler
    created_at: float


class EnhancedLLMFactory:
    """Creates systems and owns them until they are stopped or :meth:`cleanup_all` runs."""

    def __init__(self) -> None:
        self._instances: dict[str, _Instance] = {}
        self._ids = itertools.count(1)

    async def create_system(
        self,
        vllm_config: VLLMConfig | None = None,
        cache_config: CacheConfig | None = None,
        similarity_config: SimilarityConfig | None = None,
        handler_config: HandlerConfig | None = None,
        *,
        cache_manager: TieredCache | None = None,
        similarity_helper: Any = None,
    ) -> EnhancedVLLMHandler:
        """Build an engine and its handler (not started: call ``await handler.start()``).

        ``cache_manager`` / ``similarity_helper`` hand in prebuilt components instead
        of building them from the configs (the old handlers' constructor did this).
        """
        handler_config = handler_config or HandlerConfig()
        vllm_config = vllm_config or VLLMConfig()
        # Starting the engine core takes seconds; a worker thread keeps the event loop serving.
        llm = await asyncio.to_thread(
            EnhancedAsyncLLM.from_custom_config,
            custom_config=vllm_config,
            cache_config=cache_config,
            similarity_config=similarity_config,
            handler_config=handler_config,
            cache_manager=cache_manager,
            similarity_search_helper=similarity_helper,
        )
        handler = EnhancedVLLMHandler(llm, handler_config)
        instance = _Instance(f"system-{next(self._ids)}", vllm_config.engine_args.model, handler, time.time())
        self._forget_stopped()
        self._instances[instance.id] = instance
        logger.info("created %s (model %s)", instance.id, instance.model)
        return handler

    def get_instance_stats(self) -> dict[str, Any]:
        """Live systems and their state (stopped ones are forgotten)."""
        self._forget_stopped()
        instances = [
            {
                "id": i.id,
                "model": i.model,
                "started": i.handler.started,
                "running": bool(i.handler.llm.is_running),
                "created_at": i.created_at,
                "active_requests": i.handler.active_requests,
            }
            for i in self._instances.values()
        ]
        return {
            "total_instances": len(instances),
            "started_instances": sum(i["started"] for i in instances),
            "active_requests": sum(i["active_requests"] for i in instances),
            "instances": instances,
        }

    async def cleanup_all(self) -> None:
        """Stop every system: handlers, caches, components and engine processes (idempotent)."""
        instances, self._instances = list(self._instances.values()), {}
        results = await asyncio.gather(*(i.handler.stop() for i in instances), return_exceptions=True)
        for instance, result in zip(instances, results):
            if isinstance(result, BaseException):
                logger.error("stopping %s failed: %r", instance.id, result)

    def _forget_stopped(self) -> None:
        for key in [k for k, i in self._instances.items() if i.handler.stopped]:
            del self._instances[key]


_GLOBAL: EnhancedLLMFactory | None = None
_GLOBAL_LOCK = threading.Lock()


def get_global_factory() -> EnhancedLLMFactory:
    """The process-wide factory (created on first use)."""
    global _GLOBAL
    with _GLOBAL_LOCK:
        if _GLOBAL is None:
            _GLOBAL = EnhancedLLMFactory()
        return _GLOBAL


async def create_enhanced_system(
    vllm_config: VLLMConfig | None = None,
    cache_config: CacheConfig | None = None,
    similarity_config: SimilarityConfig | None = None,
    handler_config: HandlerConfig | None = None,
    **components: Any,
) -> EnhancedVLLMHandler:
    """Build a system with the global factory; see :meth:`EnhancedLLMFactory.create_system`."""
    return await get_global_factory().create_system(
        vllm_config, cache_config, similarity_config, handler_config, **components
    )
