"""Pure ASGI middleware: API key -> tenant, scope header -> request context; cache outcome -> response headers."""

from __future__ import annotations

import json

from .context import _REQUEST, ASGIApp, Message, Receive, RequestCacheContext, Scope, Send
from .gateway_schemas import error_body
from .tenants import DEFAULT_TENANT, MAX_SUB_SCOPE_CHARS, MAX_TENANT_CHARS, KeyRing, TenantPolicy, check_scope_name

__all__ = ["CacheScopeMiddleware", "OPEN_PATHS", "METRICS_PATHS"]

#: Paths served without a key (vLLM's own health checks; SageMaker's ping).
OPEN_PATHS = frozenset({"/health", "/ping"})
#: Paths served without a key unless ``--protect-metrics`` (monitoring, version, API docs).
METRICS_PATHS = frozenset({"/metrics", "/load", "/version", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"})
#: Path prefix of the CY-LLM gateway routes, where ``X-API-Key`` is accepted besides ``Authorization``.
GATEWAY_PREFIX = "/api/"


def _json_response(status: int, body: object) -> tuple[Message, Message]:
    payload = json.dumps(body).encode()
    start = {"type": "http.response.start", "status": status,
             "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]}
    return start, {"type": "http.response.body", "body": payload}


def _bad_request(message: str, param: str) -> tuple[Message, Message]:
    """vLLM's error format (``ErrorResponse``)."""
    return _json_response(400, {"error": {"message": message, "type": "BadRequestError", "param": param, "code": 400}})


def _in_gateway_format(path: str, response: tuple[Message, Message]) -> tuple[Message, Message]:
    """The CY-LLM routes (``/api/``) answer in their own documented error body (seed 001):
    ``{"error": {"code", "message", "details"}}``."""
    if not path.startswith(GATEWAY_PREFIX):
        return response
    status = response[0]["status"]
    if status == 401:
        return _json_response(401, error_body("UNAUTHORIZED", "a valid X-API-Key is required"))
    error = json.loads(response[1]["body"])["error"]
    return _json_response(status, error_body(
        "INVALID_REQUEST", error["message"], [{"type": "invalid_header", "field": error.get("param"), "description": error["message"]}],
    ))


class CacheScopeMiddleware:
    """Outermost middleware of ``enhanced-llm serve`` (see :mod:`.tenants` for the model).

    * **Authentication** when keys are configured: every path needs a valid key except
      :data:`OPEN_PATHS` and, unless ``protect_metrics``, :data:`METRICS_PATHS`. So vLLM's
      routes outside its own guarded prefixes (``POST /invocations``, ``/tokenize``,
      ``/generative_scoring``, ``/scale_elastic_ep`` ...), the gateway routes and the cache
      routes all need one. A missing or wrong key gets vLLM's 401 (``{"error": "Unauthorized"}``).
    * **Tenant**: the key's tenant (or the scope header's value for a trusted key); the header
      otherwise narrows within it. A duplicate, empty or invalid scope header is a 400.
    * **Response headers** ``X-Cache*`` from the cache outcome (see the package docstring).
    """

    def __init__(
        self, app: ASGIApp, header: str = "X-Cache-Scope", response_headers: bool = True, keys: KeyRing | None = None,
        trust_scope_header: bool = False, protect_metrics: bool = False,
    ) -> None:
        self.app = app
        self.header_name = header
        self.header = header.lower().encode("latin-1")
        self.response_headers = response_headers
        self.keys = keys if keys else None
        self.anonymous = TenantPolicy(DEFAULT_TENANT, trust_scope_header=trust_scope_header)
        self.trust_scope_header = trust_scope_header
        self.open_paths = OPEN_PATHS if protect_metrics else OPEN_PATHS | METRICS_PATHS

    def _is_open(self, path: str) -> bool:
        return path in self.open_paths or ("/metrics" in self.open_paths and path.startswith("/metrics/"))

    def _authenticate(self, headers: list[tuple[bytes, bytes]], path: str) -> TenantPolicy | None:
        assert self.keys is not None
        presented: set[str] = set()
        for name, value in headers:
            if name == b"authorization":
                scheme, _, param = value.decode("latin-1").partition(" ")
                presented.add(param if scheme.lower() == "bearer" else "\0invalid")
            elif name == b"x-api-key" and path.startswith(GATEWAY_PREFIX):
                presented.add(value.decode("latin-1"))
        if len(presented) != 1:  # none, or several different credentials: which one would count?
            return None
        return self.keys.authenticate(presented.pop())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope.get("method") == "OPTIONS":
            await self.app(scope, receive, send)
            return
        path = scope["path"].removeprefix(scope.get("root_path", ""))
        if self._is_open(path):
            await self.app(scope, receive, send)
            return
        headers = list(scope.get("headers", ()))
        policy = self.anonymous
        if self.keys is not None:
            found = self._authenticate(headers, path)
            if found is None:
                return await self._reply(scope, send, _in_gateway_format(path, _json_response(401, {"error": "Unauthorized"})))
            policy = found
        ctx_or_error = self._context(headers, policy)
        if isinstance(ctx_or_error, tuple):
            return await self._reply(scope, send, _in_gateway_format(path, ctx_or_error))
        await self._call_with_context(scope, receive, send, ctx_or_error)

    def _context(self, headers: list[tuple[bytes, bytes]], policy: TenantPolicy) -> RequestCacheContext | tuple[Message, Message]:
        values = [v for k, v in headers if k == self.header]
        if len(values) > 1:
            return _bad_request(f"{self.header_name} must be sent at most once", self.header_name)
        trusted = self.trust_scope_header or policy.trust_scope_header
        if not values:
            return RequestCacheContext(tenant=policy.tenant, policy=policy)
        try:
            value = values[0].decode("utf-8")
        except UnicodeDecodeError:
            return _bad_request(f"{self.header_name} must be UTF-8", self.header_name)
        problem = check_scope_name(value, MAX_TENANT_CHARS if trusted else MAX_SUB_SCOPE_CHARS)
        if problem:
            return _bad_request(f"{self.header_name} {problem}", self.header_name)
        if trusted:
            return RequestCacheContext(tenant=value, policy=policy)
        return RequestCacheContext(tenant=policy.tenant, sub_scopes=(value,), policy=policy)

    async def _reply(self, scope: Scope, send: Send, response: tuple[Message, Message]) -> None:
        if scope["type"] == "websocket":  # refuse the handshake
            await send({"type": "websocket.close", "code": 1008})
            return
        for message in response:
            await send(message)

    async def _call_with_context(self, scope: Scope, receive: Receive, send: Send, ctx: RequestCacheContext) -> None:
        token = _REQUEST.set(ctx)
        try:
            if not self.response_headers or scope.get("method") != "POST" or scope["type"] != "http":
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
