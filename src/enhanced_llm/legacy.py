"""Compatibility with the old handler API, so existing programs run after changing imports only.

Two parts:

* :class:`LegacyPollingMixin` gives :class:`~enhanced_llm.handler.EnhancedVLLMHandler`
  the old polling pair: ``request_id = await handler.add_request(prompt, params)`` and
  ``await handler.get_result(request_id)``. Each request is read in the background
  into a result record, kept ``HandlerConfig.result_ttl`` seconds after its last
  status change and at most ``HandlerConfig.max_results`` records (least recently
  used dropped first).
* :class:`BaseVLLMHandler` and :class:`NLPEnhancedVLLMHandler`: the old class names
  with the old constructor (``vllm_config=, cache_manager=, similarity_search_helper=,
  handler_config=``). They warn (``DeprecationWarning``) and delegate to a new handler
  built by the global factory at ``start()``. :class:`MultiLevelCacheManager` is the old
  name of :class:`~enhanced_llm.cache.tiered.TieredCache`.

``get_result`` returns ``None`` for an unknown or expired id (the old handlers did,
which is why old code reads ``if result and result["status"] == "COMPLETED"``);
otherwise a dict with ``status`` one of ``PENDING`` (accepted, no output yet),
``RUNNING`` (tokens arriving; ``text`` so far), ``COMPLETED`` or ``FAILED`` (``error``).
New code should use ``add_request_v2`` and stream the outputs instead of polling.
"""

from __future__ import annotations

import asyncio
import time
import uuid
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from cachetools import TTLCache

from .cache.tiered import TieredCache
from .config import CacheConfig, HandlerConfig, SimilarityConfig, VLLMConfig
from .errors import HandlerNotStartedError

if TYPE_CHECKING:
    from .collector import EnhancedRequestOutputCollector
    from .handler import EnhancedVLLMHandler

__all__ = [
    "ResultStatus",
    "LegacyPollingMixin",
    "BaseVLLMHandler",
    "NLPEnhancedVLLMHandler",
    "MultiLevelCacheManager",
]

ResultStatus = Literal["PENDING", "RUNNING", "COMPLETED", "FAILED"]


@dataclass
class _Result:
    """One polled request; ``as_dict()`` is what ``get_result`` returns."""

    request_id: str
    status: ResultStatus = "PENDING"
    text: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    created_at: float = field(default_factory=time.time)
    finished_at: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id, "status": self.status, "text": self.text,
            "metadata": dict(self.metadata), "error": self.error,
            "created_at": self.created_at, "finished_at": self.finished_at,
        }

    def end(self, status: ResultStatus, error: str | None = None) -> None:
        self.status, self.error, self.finished_at = status, error, time.time()


class LegacyPollingMixin:
    """``add_request`` + ``get_result`` on top of ``add_request_v2`` (mixed into the handler)."""

    add_request_v2: Any  # provided by EnhancedVLLMHandler

    def _init_polling(self, config: HandlerConfig) -> None:
        self._results: TTLCache[str, _Result] = TTLCache(maxsize=config.max_results, ttl=config.result_ttl)
        self._pollers: dict[str, asyncio.Task] = {}

    async def add_request(
        self, prompt: Any, sampling_params: Any = None, request_id: str | None = None, **options: Any
    ) -> str:
        """Submit a request and return its id at once; poll :meth:`get_result` for the answer.

        Takes the options of ``add_request_v2`` (``scope``, ``cache``, ``lora_request`` ...).
        """
        request_id = request_id or uuid.uuid4().hex
        collector = await self.add_request_v2(prompt, sampling_params, request_id=request_id, **options)
        record = _Result(request_id)
        self._results[request_id] = record
        key = f"{request_id}#{id(record)}"
        task = asyncio.get_running_loop().create_task(self._read(record, collector))
        self._pollers[key] = task
        task.add_done_callback(lambda _: self._pollers.pop(key, None))
        return request_id

    async def get_result(self, request_id: str) -> dict[str, Any] | None:
        """The request's current record (a copy), or ``None`` for an unknown or expired id."""
        record = self._results.get(request_id)
        return None if record is None else record.as_dict()

    async def _read(self, record: _Result, collector: EnhancedRequestOutputCollector) -> None:
        delta = collector.aggregate  # DELTA outputs carry only the new text
        try:
            async for output in collector.aiter():
                if output.error is not None:
                    record.end("FAILED", output.error)
                    break
                record.text = record.text + output.text if delta else output.text
                record.metadata = output.metadata
                if output.finished:
                    record.end("COMPLETED")
                elif record.status == "PENDING":
                    record.status = "RUNNING"
                    self._keep(record)
        except asyncio.CancelledError:
            record.end("FAILED", "handler stopped")
            raise
        except Exception as exc:  # noqa: BLE001 - recorded for the poller
            record.end("FAILED", f"{type(exc).__name__}: {exc}")
        finally:
            self._keep(record)

    def _keep(self, record: _Result) -> None:
        """Restart the record's lifetime at a status change (unless it was dropped or its id reused)."""
        if self._results.get(record.request_id) is record:
            self._results[record.request_id] = record

    async def _stop_polling(self) -> None:
        tasks = list(self._pollers.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _polling_stats(self) -> dict[str, int]:
        return {"results_kept": len(self._results), "results_pending": len(self._pollers)}


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
