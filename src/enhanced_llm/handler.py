"""EnhancedVLLMHandler: a thin, lifecycle-aware front of one :class:`EnhancedAsyncLLM`.

The engine does the work (cache, semantic search, NLP); the handler adds what a
service needs around it:

* ``start()`` / ``stop()`` (idempotent; also ``async with handler:``);
* ``add_request_v2(prompt, params, scope=..., cache=...)``: per-request options
  mapped onto vLLM's ``SamplingParams.extra_args``; a request that fails is
  reported as a finished output with ``.error`` instead of an exception;
* ``health_check()`` from real component probes, and ``get_stats()``;
* the polling API of the old handlers (``add_request`` + ``get_result``), from
  :class:`~enhanced_llm.polling.LegacyPollingMixin`.

Build one with :func:`enhanced_llm.factory.create_enhanced_system`.
"""

from __future__ import annotations

import logging
import multiprocessing
import time
import uuid
from typing import TYPE_CHECKING, Any, Literal

from vllm.sampling_params import RequestOutputKind, SamplingParams

from .collector import EnhancedRequestOutputCollector
from .config import HandlerConfig
from .engine import OPTIONS_KEY
from .errors import HandlerNotStartedError
from .metadata import OutputMetadata
from .polling import LegacyPollingMixin

if TYPE_CHECKING:
    from .engine import EnhancedAsyncLLM

__all__ = ["EnhancedVLLMHandler", "HealthStatus"]

logger = logging.getLogger(__name__)

HealthStatus = Literal["healthy", "degraded", "unhealthy"]
_COMPONENTS = ("engine", "cache", "vector_index", "nlp")


class EnhancedVLLMHandler(LegacyPollingMixin):
    """Start/stop, v2 requests, health and statistics around one :class:`EnhancedAsyncLLM`."""

    def __init__(self, llm: EnhancedAsyncLLM, handler_config: HandlerConfig | None = None) -> None:
        self.llm = llm
        self.handler_config = handler_config or llm.handler_config
        self.created_at = time.time()
        self._state: Literal["created", "started", "stopped"] = "created"
        self._active: dict[str, EnhancedRequestOutputCollector] = {}
        self._total = 0
        self._failed_at_add = 0
        self._init_polling(self.handler_config)

    # -- lifecycle ------------------------------------------------------------------------------

    @property
    def started(self) -> bool:
        """True between ``start()`` and ``stop()``."""
        return self._state == "started"

    @property
    def stopped(self) -> bool:
        return self._state == "stopped"

    async def start(self) -> None:
        """Load the semantic and NLP components and accept requests (idempotent)."""
        if self._state == "started":
            return
        if self._state == "stopped":
            raise HandlerNotStartedError("this handler was stopped; create a new one")
        await self.llm.start_enhancements()
        self._state = "started"
        logger.info("handler started (model %s)", self.model)

    async def stop(self) -> None:
        """Stop accepting requests, cancel legacy pollers, close caches and shut the engine down (idempotent)."""
        if self._state == "stopped":
            return
        self._state = "stopped"
        await self._stop_polling()
        self._active.clear()
        await self.llm.cleanup()
        multiprocessing.active_children()  # reap the engine processes that just exited
        logger.info("handler stopped (model %s)", self.model)

    async def __aenter__(self) -> EnhancedVLLMHandler:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def model(self) -> str:
        return str(self.llm.model_config.model)

    # -- requests -------------------------------------------------------------------------------

    async def add_request_v2(
        self,
        prompt: Any,
        sampling_params: SamplingParams | None = None,
        *,
        request_id: str | None = None,
        scope: str | None = None,
        cache: str | None = None,
        lora_request: Any = None,
        **engine_kwargs: Any,
    ) -> EnhancedRequestOutputCollector:
        """Submit a request; read its outputs with ``collector.get_outputs()`` (or ``aiter()``).

        ``scope`` (tenant) and ``cache`` (``"default"``, ``"bypass"``, ``"refresh"``,
        ``"no-store"``) go to ``extra_args["enhanced_llm"]`` of a copy of
        ``sampling_params``; other keyword arguments (``priority``, ``trace_headers``,
        ``tokenization_kwargs`` ...) go to ``AsyncLLM.add_request`` unchanged.

        Anything the engine rejects (bad prompt, bad options, engine dead) comes back
        as a collector yielding one finished item with ``.error`` set. Only use outside
        ``start()``/``stop()`` raises (:class:`HandlerNotStartedError`).
        """
        self._require_started()
        request_id = request_id or uuid.uuid4().hex
        self._total += 1
        params = sampling_params or SamplingParams()
        try:
            params = _with_options(params, scope=scope, cache=cache)
            if lora_request is not None:
                engine_kwargs["lora_request"] = lora_request
            collector = await self.llm.add_request(request_id, prompt, params, **engine_kwargs)
        except Exception as exc:  # reported like an engine-side failure: as an output
            self._failed_at_add += 1
            if self.handler_config.features.enable_detailed_logging:
                logger.info("request %s rejected: %s", request_id, exc)
            return _failed_collector(request_id, params, exc)
        self._track(request_id, collector)
        return collector

    def _require_started(self) -> None:
        if self._state != "started":
            raise HandlerNotStartedError(
                "handler is stopped" if self.stopped else "call `await handler.start()` before sending requests"
            )

    def _track(self, request_id: str, collector: EnhancedRequestOutputCollector) -> None:
        """Count the request as active until its final output (or error) is put."""
        if _is_done(collector):
            return
        key = f"{request_id}#{id(collector)}"
        self._active[key] = collector
        put = collector.put

        def put_and_untrack(output: Any) -> None:
            put(output)
            if isinstance(output, BaseException) or _is_done(collector):
                self._active.pop(key, None)

        collector.put = put_and_untrack  # type: ignore[method-assign]

    @property
    def active_requests(self) -> int:
        """Requests submitted through this handler whose final output has not arrived yet."""
        for key in [k for k, c in self._active.items() if _is_done(c)]:
            del self._active[key]
        return len(self._active)

    # -- health and statistics -----------------------------------------------------------------

    async def health_check(self) -> dict[str, Any]:
        """Probe every component for real and summarise.

        ``status``: ``"unhealthy"`` when the engine does not answer or the handler is not
        started, ``"degraded"`` when an optional component (Redis, vector index, NLP) is
        unhealthy, else ``"healthy"``. Components that are switched off read ``"disabled"``.
        """
        if self.stopped:
            stopped = {"status": "stopped"}
            components = {name: dict(stopped) for name in _COMPONENTS}
            components["cache"] = {"memory": dict(stopped), "redis": dict(stopped)}
            return self._health("unhealthy", components, reason="handler stopped")
        probed = await self.llm.check_components()
        components: dict[str, Any] = {
            "engine": probed.get("engine", {"status": "unhealthy", "error": "no probe"}),
            "cache": {"memory": {"status": "disabled"}, "redis": {"status": "disabled"}, **probed.get("cache", {})},
            "vector_index": probed.get("vector_index", {"status": "disabled"}),
            "nlp": probed.get("nlp", {"status": "disabled"}),
        }
        optional = [components["vector_index"], components["nlp"], *components["cache"].values()]
        if components["engine"].get("status") != "healthy":
            return self._health("unhealthy", components, reason="engine unhealthy")
        if not self.started:
            return self._health("unhealthy", components, reason="handler not started")
        if any(c.get("status") not in ("healthy", "disabled") for c in optional):
            return self._health("degraded", components)
        return self._health("healthy", components)

    def _health(self, status: HealthStatus, components: dict[str, Any], reason: str | None = None) -> dict[str, Any]:
        result = {
            "status": status,
            "components": components,
            "started": self.started,
            "model": self.model,
            "active_requests": self.active_requests,
            "timestamp": time.time(),
        }
        if reason is not None:
            result["reason"] = reason
        return result

    def get_stats(self) -> dict[str, Any]:
        """Request counters of this handler plus the engine's cache, semantic and NLP statistics."""
        enhanced = self.llm.get_enhanced_stats()
        return {
            "active_requests": self.active_requests,
            "llm_running": bool(self.llm.is_running) and not self.stopped,
            "started": self.started,
            "total_requests": self._total,
            "rejected_requests": self._failed_at_add,
            "legacy": self._polling_stats(),
            "cache": enhanced.get("cache"),
            "semantic": enhanced.get("semantic"),
            "nlp": enhanced.get("nlp"),
        }


def _with_options(params: SamplingParams, *, scope: str | None, cache: str | None) -> SamplingParams:
    """A copy of ``params`` whose ``extra_args["enhanced_llm"]`` carries ``scope`` / ``cache``."""
    if scope is None and cache is None:
        return params
    clone = params.clone()
    extra = dict(clone.extra_args or {})
    options = dict(extra.get(OPTIONS_KEY) or {})
    if scope is not None:
        options["scope"] = scope
    if cache is not None:
        options["cache"] = cache
    extra[OPTIONS_KEY] = options
    clone.extra_args = extra
    return clone


def _is_done(collector: EnhancedRequestOutputCollector) -> bool:
    return collector.metadata.finished_at is not None


def _failed_collector(request_id: str, params: Any, exc: Exception) -> EnhancedRequestOutputCollector:
    """A collector whose only item is the error (``aiter()`` turns it into ``.error``)."""
    kind = getattr(params, "output_kind", RequestOutputKind.CUMULATIVE)
    meta = OutputMetadata(cache_status="error")
    meta.finished_at = time.perf_counter()
    collector = EnhancedRequestOutputCollector(kind, request_id, meta)
    collector.put(exc)
    return collector
