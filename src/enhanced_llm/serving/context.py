"""One HTTP request's cache context, shared by the middleware and the engine, and the body options."""

from __future__ import annotations

import contextvars
import copy
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from vllm.exceptions import VLLMValidationError

from ..engine import OPTIONS_KEY
from .tenants import DEFAULT_TENANT, MAX_SUB_SCOPE_CHARS, TenantPolicy, check_scope_name, encode_scope

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


@dataclass(slots=True)
class RequestCacheContext:
    """One HTTP request: who sent it (tenant and policy), the sub-scope from its header, and the
    metadata of each generation it started.

    The middleware creates it and sets it in :data:`_REQUEST` before calling the app;
    tasks that Starlette and vLLM spawn for the request copy the context, and since
    the object is shared (not re-set), what the engine records is seen by the middleware.
    """

    tenant: str = DEFAULT_TENANT
    sub_scopes: tuple[str, ...] = ()  # from the scope header (narrows within the tenant)
    policy: TenantPolicy = field(default_factory=lambda: TenantPolicy(DEFAULT_TENANT))
    outcomes: list[Any] = field(default_factory=list)  # OutputMetadata objects, live
    forgotten: list[bool] | None = None  # set by DELETE /v1/cache: requests are forgotten, not generated

    def scope_for(self, body_scope: Any = None) -> str:
        """The engine scope of this request narrowed by a client body scope (validated here)."""
        subs = self.sub_scopes
        if body_scope is not None:
            problem = check_scope_name(body_scope, MAX_SUB_SCOPE_CHARS)
            if problem:
                raise VLLMValidationError(f"scope {problem}", parameter="scope", value=body_scope)
            subs = (*subs, body_scope)
        try:
            return encode_scope(self.tenant, subs)
        except ValueError as exc:
            raise VLLMValidationError(str(exc), parameter="scope") from None

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


def merge_request_options(params: Any, ctx: RequestCacheContext) -> Any:
    """Return ``params`` with the request's scope and flat ``vllm_xargs`` options in ``extra_args["enhanced_llm"]``.

    The scope is always the caller's tenant (see :mod:`.tenants`), narrowed by the header's
    sub-scope and then by a body scope (flat ``cache_scope`` / ``enhanced_llm.scope``, or a nested
    ``enhanced_llm`` object), encoded unambiguously. A cache mode the caller's key may not use
    raises ``VLLMValidationError`` (a 400 in vLLM's error format). ``params`` is left untouched
    (a shallow copy gets the new ``extra_args``); other option values are validated by the engine.
    """
    extra = params.extra_args if isinstance(params.extra_args, dict) else {}
    new_extra = dict(extra)
    nested = new_extra.pop(OPTIONS_KEY, None)
    if nested is not None and not isinstance(nested, dict):
        return params  # malformed: let the engine report it
    options = dict(nested or {})
    for key in FLAT_OPTION_KEYS:
        if key in new_extra:
            options[FLAT_OPTION_KEYS[key]] = new_extra.pop(key)
    options["scope"] = ctx.scope_for(options.get("scope"))
    if options.get("cache") == "refresh" and not ctx.policy.allow_refresh:
        raise VLLMValidationError("cache mode 'refresh' is not allowed for this API key", parameter="cache", value="refresh")
    new_extra[OPTIONS_KEY] = options
    merged = copy.copy(params)
    merged.extra_args = new_extra
    return merged
