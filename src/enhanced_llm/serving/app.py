"""The server: vLLM's own app and launcher with :class:`ServingEnhancedAsyncLLM` as the engine."""

from __future__ import annotations

import asyncio
import logging
import signal
from argparse import Namespace
from collections.abc import Callable
from typing import Any

from .cache_routes import add_cache_routes
from .engine import ServingEnhancedAsyncLLM
from .gateway import add_gateway_routes
from .grpc_server import STOP_GRACE_S, start_grpc_server
from .middleware import CacheScopeMiddleware
from .options import ServingOptions
from .tenants import KeyRing

logger = logging.getLogger("enhanced_llm.serving")


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


def _structured_http_errors(app: Any) -> None:
    """Starlette's own HTTP errors (a body that is not UTF-8, an unknown path or method) in vLLM's
    error format, ``{"error": {"message", "type", "param", "code"}}``, like every other 4xx of the
    server (FastAPI would answer ``{"detail": ...}``)."""
    from http import HTTPStatus

    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException

    async def handler(request: Any, exc: HTTPException) -> JSONResponse:
        phrase = HTTPStatus(exc.status_code).phrase if exc.status_code in HTTPStatus._value2member_map_ else "Error"
        body = {"error": {"message": str(exc.detail), "type": phrase.replace(" ", "") + "Error", "param": None,
                          "code": exc.status_code}}
        return JSONResponse(body, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    app.add_exception_handler(HTTPException, handler)


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


def _key_ring(args: Namespace, options: ServingOptions) -> KeyRing:
    """Every key the server accepts: vLLM's (``--api-key``, else ``VLLM_API_KEY``) and the tenant file's.

    vLLM's own key check (``/v1`` ...) stays in place, inside ours; it is given every key so
    that it accepts the tenant keys too."""
    import vllm.envs as envs

    plain = [k for k in (args.api_key or [envs.VLLM_API_KEY]) if k]
    tenant_keys = options.tenant_keys or {}
    if options.trust_scope_header and tenant_keys:
        raise SystemExit(
            "enhanced-llm: --trust-scope-header with --tenant-keys would let every key choose its tenant; "
            'mark the gateway\'s key with "trust_scope_header": true in the tenant file instead'
        )
    try:
        ring = KeyRing.build(plain, tenant_keys)
    except ValueError as exc:
        raise SystemExit(f"enhanced-llm: {exc}") from None
    if ring:
        args.api_key = [*plain, *tenant_keys]
    return ring


async def run_server(args: Namespace, options: ServingOptions, **uvicorn_kwargs: Any) -> None:
    """Serve until SIGINT/SIGTERM; then finish or abort in-flight requests and clean everything up."""
    import vllm.envs as envs
    from vllm.entrypoints.launchers.api_server.app_state import init_app_state
    from vllm.entrypoints.launchers.app import build_app
    from vllm.entrypoints.launchers.launcher import serve_http, setup_server
    from vllm.entrypoints.launchers.utils.server_utils import get_uvicorn_log_config
    from vllm.utils.system_utils import decorate_logs

    from ..metrics import register_metrics, unregister_metrics

    _check_supported(args)
    keys = _key_ring(args, options)
    decorate_logs("APIServer", skip_if_decorated=True)

    def _interrupt_init(*_: Any) -> None:  # until serve_http installs its own handlers
        raise KeyboardInterrupt("terminated")

    signal.signal(signal.SIGTERM, _interrupt_init)
    listen_address, sock = setup_server(args, reuse_port=False)
    engine: ServingEnhancedAsyncLLM | None = None
    collector = None
    grpc_server = None
    try:
        engine = _build_engine(args, options)
        await engine.reset_mm_cache()
        if engine.similarity_helper is not None or engine.nlp_analyzer is not None:
            await engine.start_enhancements()

        supported_tasks = await engine.get_supported_tasks()
        app = build_app(args, supported_tasks, engine.model_config)
        await init_app_state(engine, app.state, args, supported_tasks)
        add_cache_routes(app, engine)
        _structured_http_errors(app)
        _add_outermost_middleware(
            app, CacheScopeMiddleware, header=options.scope_header, response_headers=options.cache_response_headers,
            keys=keys, trust_scope_header=options.trust_scope_header, protect_metrics=options.protect_metrics,
        )
        gateway = add_gateway_routes(app, engine, args)  # CY-LLM's /api/v1 routes
        if options.grpc_port is not None:
            grpc_server = await start_grpc_server(engine, gateway.info, keys, args.host, options.grpc_port)
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
        if grpc_server is not None:
            await grpc_server.stop(STOP_GRACE_S)
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
