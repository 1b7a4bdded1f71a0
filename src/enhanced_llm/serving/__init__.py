"""The OpenAI-compatible server: vLLM's own app and launcher, with :class:`EnhancedAsyncLLM` as the engine.

vLLM's server has no engine-class hook, so this module replays the short path of
``vllm.entrypoints.launchers.api_server.entry.run_server`` with vLLM's own functions
and only the engine swapped (nothing in vLLM is patched):

1. ``setup_server(args)`` validates the API options and binds the socket;
2. the engine is ``ServingEnhancedAsyncLLM.from_vllm_config(...)`` with the same
   arguments vLLM's ``build_async_engine_client_from_engine_args`` passes;
3. ``build_app(args)`` + ``init_app_state(engine, app.state, args)``: every route,
   option and middleware of ``vllm serve`` (``--api-key``, LoRA, ``/metrics`` ...);
4. on top of that app: ``DELETE /v1/cache`` (:mod:`.cache_routes`), :class:`CacheScopeMiddleware`
   (keys, tenants, cache headers) and the cache metrics collector;
5. ``serve_http(...)`` serves it with vLLM's SIGINT/SIGTERM handling; afterwards
   ``engine.cleanup()`` closes the Redis pools and stops the engine core process.

CY-LLM's gateway
----------------
The same app also serves CY-LLM's ``/api/v1`` REST routes (:mod:`.gateway`) and, with
``--grpc-port``, its gRPC ``AIService.StreamPredict`` (:mod:`.grpc_server`), on the same
engine and caches. Their callers are authenticated and scoped like every other route's (:mod:`.tenants`).

Who may read which cache entries (:mod:`.tenants`)
--------------------------------------------------
* **Keys**: with ``--api-key`` and/or ``--tenant-keys FILE``, every route needs a key except
  ``/health`` and ``/ping`` (and ``/metrics``, ``/load``, ``/version``, the API docs unless
  ``--protect-metrics``): ``/v1/*``, ``POST /invocations``, the gateway's ``/api/v1/*``
  (``X-API-Key`` accepted there), ``DELETE /v1/cache``.
* **Tenant**: the caller's key's tenant (``--api-key`` holders, and everyone on a server without
  keys, are tenant ``default``). Unscoped requests use their tenant's root scope.
* **Client scope** (header ``X-Cache-Scope``; body ``vllm_xargs`` ``{"enhanced_llm.scope": "b"}`` or
  ``{"cache_scope": "b"}``): narrows *within* the tenant; header then body nest, and the engine
  scope is the JSON list ``["tenant", "header", "body"]`` (tenant ``a`` + ``b`` is never tenant
  ``a/b``). A duplicate, empty or over-long header is a 400. With ``--trust-scope-header`` (or
  a key marked ``trust_scope_header`` in the file) the header *is* the tenant.
* **Cache mode** ``vllm_xargs`` ``{"enhanced_llm.cache": "bypass"|"refresh"|"no-store"}`` (short
  form ``cache_mode``); ``refresh`` is refused (400) for keys with ``"allow_refresh": false``.
* **Response headers**: ``X-Cache: HIT|MISS`` (HIT only when every generation of
  the HTTP request came from the cache), ``X-Cache-Status`` (the engine's reason:
  ``hit``, ``coalesced``, ``miss``, ``bypass``, ``uncacheable:logprobs`` ...), and on hits
  ``X-Cache-Source: exact|semantic`` and ``X-Cache-Level: memory|redis``. The middleware holds the response's
  start message until its first body chunk, by which time the engine has decided;
  this works for non-streaming *and* streaming responses (an SSE stream's headers
  go out with its first event, which is when its first token is ready anyway).
"""

from .app import run_server, serve
from .cache_routes import CACHE_PATH
from .context import FLAT_OPTION_KEYS, RequestCacheContext, merge_request_options
from .engine import ServingEnhancedAsyncLLM
from .middleware import CacheScopeMiddleware
from .options import ServingOptions
from .tenants import DEFAULT_TENANT, KeyRing, TenantPolicy, decode_scope, encode_scope, load_tenant_keys

__all__ = [
    "ServingOptions",
    "ServingEnhancedAsyncLLM",
    "CacheScopeMiddleware",
    "RequestCacheContext",
    "FLAT_OPTION_KEYS",
    "merge_request_options",
    "TenantPolicy",
    "KeyRing",
    "DEFAULT_TENANT",
    "encode_scope",
    "decode_scope",
    "load_tenant_keys",
    "CACHE_PATH",
    "run_server",
    "serve",
]
