"""The OpenAI-compatible server: vLLM's own app and launcher, with :class:`EnhancedAsyncLLM` as the engine.

vLLM's server has no engine-class hook, so this module replays the short path of
``vllm.entrypoints.launchers.api_server.entry.run_server`` with vLLM's own functions
and only the engine swapped (nothing in vLLM is patched):

1. ``setup_server(args)`` validates the API options and binds the socket;
2. the engine is ``ServingEnhancedAsyncLLM.from_vllm_config(...)`` with the same
   arguments vLLM's ``build_async_engine_client_from_engine_args`` passes;
3. ``build_app(args)`` + ``init_app_state(engine, app.state, args)``: every route,
   option and middleware of ``vllm serve`` (``--api-key``, LoRA, ``/metrics`` ...);
4. on top of that app: :class:`CacheScopeMiddleware` and the cache metrics collector;
5. ``serve_http(...)`` serves it with vLLM's SIGINT/SIGTERM handling; afterwards
   ``engine.cleanup()`` closes the Redis pools and stops the engine core process.

Per-request cache control over HTTP
-----------------------------------
* **Scope header** (default ``X-Cache-Scope``): the tenant. The middleware puts the
  value into a per-request context; :class:`ServingEnhancedAsyncLLM` reads it in
  ``add_request`` and merges it into ``extra_args["enhanced_llm"]["scope"]``.
* **Body** (``vllm_xargs``, flat values only in vLLM 0.32): ``{"enhanced_llm.scope": "a",
  "enhanced_llm.cache": "bypass"}`` (short forms ``cache_scope`` / ``cache_mode``).
* **Precedence**: the header is the tenant and a body scope narrows *within* it:
  header ``a`` + body ``b`` gives scope ``a/b``; either alone is used as is. So a
  client behind a gateway that sets the header cannot leave its tenant.
* **Response headers**: ``X-Cache: HIT|MISS`` (HIT only when every generation of
  the HTTP request came from the cache), ``X-Cache-Status`` (the engine's reason:
  ``hit``, ``coalesced``, ``miss``, ``bypass``, ``uncacheable:logprobs`` ...), and on hits
  ``X-Cache-Source: exact|semantic`` and ``X-Cache-Level: memory|redis``. The middleware holds the response's
  start message until its first body chunk, by which time the engine has decided;
  this works for non-streaming *and* streaming responses (an SSE stream's headers
  go out with its first event, which is when its first token is ready anyway).
"""

from __future__ import annotations

import asyncio
import contextvars
import copy
import logging
import signal
from argparse import Namespace
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from vllm.pooling_params import PoolingParams

from .config import CacheConfig, HandlerConfig, SimilarityConfig
from .engine import OPTIONS_KEY, EnhancedAsyncLLM

__all__ = [
    "ServingOptions",
    "ServingEnhancedAsyncLLM",
    "CacheScopeMiddleware",
    "RequestCacheContext",
    "FLAT_OPTION_KEYS",
    "merge_request_options",
    "run_server",
    "serve",
]

logger = logging.getLogger(__name__)

#: Flat ``vllm_xargs`` keys (vLLM 0.32 accepts no nested objects there) -> our option name.
FLAT_OPTION_KEYS: dict[str, str] = {
    f"{OPTIONS_KEY}.scope": "scope",
    f"{OPTIONS_KEY}.cache": "cache",
    "cache_scope": "scope",
    "cache_mode": "cache",
}

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass
class ServingOptions:
    """What the server adds to ``vllm serve``: the enhancement configs and the HTTP mapping."""

    cache_config: CacheConfig = field(default_factory=CacheConfig)
    similarity_config: SimilarityConfig = field(default_factory=SimilarityConfig)
    handler_config: HandlerConfig = field(default_factory=HandlerConfig)
    scope_header: str = "X-Cache-Scope"
    cache_response_headers: bool = True


# -- per-request context: middleware <-> engine -------------------------------------------------


@dataclass(slots=True)
class RequestCacheContext:
    """One HTTP request: the scope from its header, and the metadata of each generation it started.

    The middleware creates it and sets it in :data:`_REQUEST` before calling the app;
    tasks that Starlette and vLLM spawn for the request copy the context, and since
    the object is shared (not re-set), what the engine records is seen by the middleware.
    """

    scope: str | None = None
    outcomes: list[Any] = field(default_factory=list)  # OutputMetadata objects, live

    def cache_headers(self) -> list[tuple[bytes, bytes]]:
        """``X-Cache*`` headers, or none when the request generated nothing."""
        if not self.outcomes:
            return []
        hit = all(getattr(m, "cache_hit", False) for m in self.outcomes)
        first = self.outcomes[0]
        headers = [(b"x-cache", b"HIT" if hit else b"MISS"), (b"x-cache-status", str(first.cache_status).encode())]
        if hit:
            if first.cache_source:
                headers.append((b"x-cache-source", first.cache_source.encode()))
            if first.cache_level:
                headers.append((b"x-cache-level", first.cache_level.encode()))
        return headers


_REQUEST: contextvars.ContextVar[RequestCacheContext | None] = contextvars.ContextVar(
    "enhanced_llm_request", default=None
)


def merge_request_options(params: Any, header_scope: str | None) -> Any:
    """Return ``params`` with the header scope and flat ``vllm_xargs`` options in ``extra_args["enhanced_llm"]``.

    ``params`` is left untouched (a shallow copy gets the new ``extra_args``) and is
    returned as is when there is nothing to merge. Values are validated by the engine.
    """
    extra = params.extra_args if isinstance(params.extra_args, dict) else None
    flat = [k for k in FLAT_OPTION_KEYS if k in extra] if extra else []
    if not header_scope and not flat:
        return params
    new_extra = dict(extra or {})
    nested = new_extra.pop(OPTIONS_KEY, None)
    if nested is not None and not isinstance(nested, dict):
        return params  # malformed: let the engine report it
    options = dict(nested or {})
    for key in flat:
        options[FLAT_OPTION_KEYS[key]] = new_extra.pop(key)
    body_scope = options.get("scope")
    if header_scope:
        options["scope"] = f"{header_scope}/{body_scope}" if isinstance(body_scope, str) and body_scope else header_scope
    new_extra[OPTIONS_KEY] = options
    merged = copy.copy(params)
    merged.extra_args = new_extra
    return merged


class ServingEnhancedAsyncLLM(EnhancedAsyncLLM):
    """``EnhancedAsyncLLM`` for the server: per-request options from the HTTP layer, clean shutdown.

    * ``add_request`` merges the request context's scope and flat ``vllm_xargs``
      options into ``extra_args["enhanced_llm"]`` and records the outcome for the
      response headers (see the module docstring).
    * ``shutdown`` ends requests still waiting for output with ``EngineDeadError``.
      vLLM's ``serve_http`` stops the engine core on SIGINT/SIGTERM (``--shutdown-timeout
      0``, the default: at once; ``N``: after letting running requests finish for up
      to N seconds) but nothing then wakes the requests still waiting, so their HTTP
      connections, and uvicorn's shutdown, would hang until the clients gave up.
    """

    _serving_loop: asyncio.AbstractEventLoop | None = None

    async def add_request(self, request_id: str, prompt: Any, params: Any, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        if self._serving_loop is None:
            self._serving_loop = asyncio.get_running_loop()
        ctx = _REQUEST.get()
        if not isinstance(params, PoolingParams):
            params = merge_request_options(params, ctx.scope if ctx is not None else None)
        collector = await super().add_request(request_id, prompt, params, *args, **kwargs)
        if ctx is not None and (meta := getattr(collector, "metadata", None)) is not None:
            ctx.outcomes.append(meta)
        return collector

    def shutdown(self, timeout: float | None = None) -> None:
        super().shutdown(timeout=timeout)
        loop = self._serving_loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._fail_unfinished()
        else:  # vLLM calls shutdown from an executor thread
            loop.call_soon_threadsafe(self._fail_unfinished)

    def _fail_unfinished(self) -> None:
        from vllm.v1.engine.exceptions import EngineDeadError

        queues = {id(state.queue): state.queue for state in list(self.output_processor.request_states.values())}
        for queue in queues.values():
            if queue is not None:
                queue.put(EngineDeadError("the server is shutting down"))


# -- the ASGI middleware ------------------------------------------------------------------------


class CacheScopeMiddleware:
    """Pure ASGI middleware: tenant header -> request context; cache outcome -> response headers."""

    def __init__(self, app: ASGIApp, header: str = "X-Cache-Scope", response_headers: bool = True) -> None:
        self.app = app
        self.header = header.lower().encode("latin-1")
        self.response_headers = response_headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw = next((v for k, v in scope.get("headers", ()) if k == self.header), b"")
        ctx = RequestCacheContext(scope=raw.decode("latin-1").strip() or None)
        token = _REQUEST.set(ctx)
        try:
            if not self.response_headers or scope.get("method") != "POST":
                await self.app(scope, receive, send)
                return
            held: list[Message] = []

            async def send_with_cache_headers(message: Message) -> None:
                if message["type"] == "http.response.start":
                    held.append(message)  # wait for the first body chunk: the engine has decided by then
                    return
                if held and message["type"] == "http.response.body":
                    start = held.pop()
                    start["headers"] = [*start.get("headers", ()), *ctx.cache_headers()]
                    await send(start)
                await send(message)

            try:
                await self.app(scope, receive, send_with_cache_headers)
            finally:
                if held:  # an app that ended without a body (should not happen) still answers
                    await send(held.pop())
        finally:
            _REQUEST.reset(token)


# -- the server ---------------------------------------------------------------------------------


def _build_engine(args: Namespace, options: ServingOptions) -> ServingEnhancedAsyncLLM:
    """As ``build_async_engine_client_from_engine_args`` does, with our engine class."""
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.entrypoints.launchers.cli_args import propagate_flash_late_interaction
    from vllm.usage.usage_lib import UsageContext

    engine_args = AsyncEngineArgs.from_cli_args(args)
    propagate_flash_late_interaction(args, engine_args)
    usage_context = UsageContext.OPENAI_API_SERVER
    vllm_config = engine_args.create_engine_config(usage_context=usage_context)
    return ServingEnhancedAsyncLLM.from_vllm_config(
        vllm_config=vllm_config,
        usage_context=usage_context,
        enable_log_requests=engine_args.enable_log_requests,
        aggregate_engine_logging=engine_args.aggregate_engine_logging,
        disable_log_stats=engine_args.disable_log_stats,
        cache_config=options.cache_config,
        similarity_config=options.similarity_config,
        handler_config=options.handler_config,
    )


def _add_outermost_middleware(app: Any, cls: type, **kwargs: Any) -> None:
    """``app.add_middleware`` for an app whose stack is already built.

    vLLM's ``build_app`` ends with SageMaker's bootstrap, which builds the middleware
    stack, so Starlette's ``add_middleware`` refuses; we insert and rebuild as that
    bootstrap itself does (the stack is not running yet).
    """
    from starlette.middleware import Middleware

    app.user_middleware.insert(0, Middleware(cls, **kwargs))
    app.middleware_stack = app.build_middleware_stack()


def _check_supported(args: Namespace) -> None:
    """Launch modes that need vLLM's multi-process front ends are not offered here."""
    unsupported = {
        "--headless": getattr(args, "headless", False),
        "--api-server-count > 1": (getattr(args, "api_server_count", None) or 1) > 1,
        "--data-parallel-size > 1": (getattr(args, "data_parallel_size", 1) or 1) > 1,
        "--grpc": getattr(args, "grpc", False),
    }
    bad = [name for name, on in unsupported.items() if on]
    if bad:
        raise SystemExit(f"enhanced-llm serve runs one API server in this process; not supported: {', '.join(bad)}")


async def run_server(args: Namespace, options: ServingOptions, **uvicorn_kwargs: Any) -> None:
    """Serve until SIGINT/SIGTERM; then finish or abort in-flight requests and clean everything up."""
    import vllm.envs as envs
    from vllm.entrypoints.launchers.api_server.app_state import init_app_state
    from vllm.entrypoints.launchers.app import build_app
    from vllm.entrypoints.launchers.launcher import serve_http, setup_server
    from vllm.entrypoints.launchers.utils.server_utils import get_uvicorn_log_config
    from vllm.utils.system_utils import decorate_logs

    from .metrics import register_metrics, unregister_metrics

    _check_supported(args)
    decorate_logs("APIServer", skip_if_decorated=True)

    def _interrupt_init(*_: Any) -> None:  # until serve_http installs its own handlers
        raise KeyboardInterrupt("terminated")

    signal.signal(signal.SIGTERM, _interrupt_init)
    listen_address, sock = setup_server(args, reuse_port=False)
    engine: ServingEnhancedAsyncLLM | None = None
    collector = None
    try:
        engine = _build_engine(args, options)
        await engine.reset_mm_cache()
        if engine.similarity_helper is not None or engine.nlp_analyzer is not None:
            await engine.start_enhancements()

        supported_tasks = await engine.get_supported_tasks()
        app = build_app(args, supported_tasks, engine.model_config)
        await init_app_state(engine, app.state, args, supported_tasks)
        _add_outermost_middleware(
            app, CacheScopeMiddleware, header=options.scope_header, response_headers=options.cache_response_headers
        )
        collector = register_metrics(engine)

        if (log_config := get_uvicorn_log_config(args)) is not None:
            uvicorn_kwargs["log_config"] = log_config
        logger.info("Starting enhanced-llm server on %s", listen_address)
        shutdown = await serve_http(
            app,
            sock=sock,
            enable_ssl_refresh=args.enable_ssl_refresh,
            host=args.host,
            port=args.port,
            log_level=args.uvicorn_log_level,
            access_log=not args.disable_uvicorn_access_log,
            timeout_keep_alive=envs.VLLM_HTTP_TIMEOUT_KEEP_ALIVE,
            ssl_keyfile=args.ssl_keyfile,
            ssl_certfile=args.ssl_certfile,
            ssl_ca_certs=args.ssl_ca_certs,
            ssl_cert_reqs=args.ssl_cert_reqs,
            ssl_ciphers=args.ssl_ciphers,
            h11_max_incomplete_event_size=args.h11_max_incomplete_event_size,
            h11_max_header_count=args.h11_max_header_count,
            **uvicorn_kwargs,
        )
        await shutdown  # uvicorn closes connections once their requests are done
    finally:
        if collector is not None:
            unregister_metrics(collector)
        if engine is not None:
            await engine.cleanup()  # flush cache writes, close Redis pools, stop the engine core
        sock.close()
        logger.info("enhanced-llm server stopped")


def serve(args: Namespace, options: ServingOptions) -> None:
    """Blocking entry point (uvloop, as ``vllm serve``)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - vLLM depends on uvloop
        runner: Callable[[Any], Any] = asyncio.run
    else:
        runner = uvloop.run
    try:
        runner(run_server(args, options))
    except KeyboardInterrupt:  # a signal before serve_http took over (engine still starting)
        logger.info("enhanced-llm server interrupted during start-up")
