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

CY-LLM's gateway
----------------
The same app also serves CY-LLM's ``/api/v1`` REST routes (:mod:`.gateway`) and, with
``--grpc-port``, its gRPC ``AIService.StreamPredict`` (:mod:`.grpc_server`), on the same
engine and caches. Their ``X-API-Key`` check is :class:`.gateway_auth.ApiKeys`.

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

from .app import run_server, serve
from .context import FLAT_OPTION_KEYS, RequestCacheContext, merge_request_options
from .engine import ServingEnhancedAsyncLLM
from .middleware import CacheScopeMiddleware
from .options import ServingOptions

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
