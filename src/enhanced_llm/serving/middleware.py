"""Pure ASGI middleware: scope header -> request context; cache outcome -> response headers."""

from __future__ import annotations

from .context import _REQUEST, ASGIApp, Message, Receive, RequestCacheContext, Scope, Send


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
