"""``DELETE /v1/cache``: remove a wrong answer, or everything of a scope, within the caller's tenant.

Body, one of:

* the body of the ``/v1/chat/completions`` (``messages``) or ``/v1/completions`` (``prompt``)
  request whose stored answer to remove, with the same sampling fields, ``vllm_xargs`` scope and
  ``X-Cache-Scope`` header. vLLM's own handler turns it into the engine request (same chat
  rendering, same defaults), and the engine forgets that request's answer instead of generating
  (:meth:`EnhancedAsyncLLM.forget`): ``{"object": "cache.forget", "forgotten": true|false}``.
* ``{"forget_scope": true, "scope": "sub"?}``: every answer of the caller's tenant (narrowed by
  the header and ``scope`` when given) becomes unreachable (:meth:`EnhancedAsyncLLM.forget_scope`):
  ``{"object": "cache.forget_scope", "epoch": N}``. Sub-scopes are scopes of their own: forgetting
  the tenant's root scope leaves the answers of its sub-scopes.

The tenant is always the caller's (:mod:`.tenants`); a key with ``"allow_forget": false`` gets a
403. Removal reaches every replica through the invalidation stream.
"""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any

from fastapi import Request  # at module level: FastAPI resolves the route's annotations here

from .context import _REQUEST

__all__ = ["CACHE_PATH", "add_cache_routes"]

CACHE_PATH = "/v1/cache"


def _error(status: HTTPStatus, message: str, param: str | None = None) -> Any:
    from fastapi.responses import JSONResponse

    return JSONResponse(
        {"error": {"message": message, "type": status.phrase.replace(" ", "") + "Error", "param": param, "code": status.value}},
        status_code=status.value,
    )


def add_cache_routes(app: Any, engine: Any) -> None:
    """Register ``DELETE /v1/cache`` on vLLM's app (behind :class:`CacheScopeMiddleware`)."""
    from fastapi.responses import JSONResponse
    from pydantic import ValidationError
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
    from vllm.entrypoints.openai.completion.protocol import CompletionRequest

    async def delete_cache(raw_request: Request) -> Any:
        ctx = _REQUEST.get()
        if ctx is None:  # the middleware sets it for every guarded path
            return _error(HTTPStatus.INTERNAL_SERVER_ERROR, "no request context")
        if not ctx.policy.allow_forget:
            return _error(HTTPStatus.FORBIDDEN, "this API key may not remove cache entries")
        try:
            body = json.loads(await raw_request.body())
        except (ValueError, UnicodeDecodeError) as exc:
            return _error(HTTPStatus.BAD_REQUEST, f"body is not JSON: {exc}")
        if not isinstance(body, dict):
            return _error(HTTPStatus.BAD_REQUEST, "body must be a JSON object")
        if body.get("forget_scope") is not None:
            return await _forget_scope(body)
        if "messages" in body:
            model_cls, handler = ChatCompletionRequest, raw_request.app.state.openai_serving_chat
        elif "prompt" in body:
            model_cls, handler = CompletionRequest, raw_request.app.state.openai_serving_completion
        else:
            return _error(HTTPStatus.BAD_REQUEST, "body needs 'messages', 'prompt' or 'forget_scope'")
        if handler is None:
            return _error(HTTPStatus.NOT_IMPLEMENTED, "the model does not serve this request kind")
        body.setdefault("model", engine.model_config.served_model_name)
        body["stream"] = False
        try:
            request = model_cls.model_validate(body)
        except ValidationError as exc:
            return _error(HTTPStatus.BAD_REQUEST, str(exc))
        ctx.forgotten = []
        if model_cls is ChatCompletionRequest:
            result = await handler.create_chat_completion(request, raw_request)
        else:
            result = await handler.create_completion(request, raw_request)
        error = getattr(result, "error", None)
        if error is not None:  # vLLM's ErrorResponse (bad request, unknown model ...)
            return JSONResponse(result.model_dump(), status_code=error.code)
        return JSONResponse({"object": "cache.forget", "forgotten": any(ctx.forgotten)})

    async def _forget_scope(body: dict[str, Any]) -> Any:
        ctx = _REQUEST.get()
        assert ctx is not None
        if set(body) - {"forget_scope", "scope", "model"}:
            return _error(HTTPStatus.BAD_REQUEST, "forget_scope takes only 'scope' (a sub-scope)")
        if body["forget_scope"] is not True:
            return _error(HTTPStatus.BAD_REQUEST, "forget_scope must be true", "forget_scope")
        from vllm.exceptions import VLLMValidationError

        try:
            scope = ctx.scope_for(body.get("scope"))
        except VLLMValidationError as exc:
            return _error(HTTPStatus.BAD_REQUEST, str(exc), "scope")
        epoch = await engine.forget_scope(scope)
        return JSONResponse({"object": "cache.forget_scope", "epoch": epoch})

    app.add_api_route(CACHE_PATH, delete_cache, methods=["DELETE"], include_in_schema=True)
