"""One HTTP request's cache context, shared by the middleware and the engine, and the body options."""

from __future__ import annotations

import contextvars
import copy
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from ..engine import OPTIONS_KEY

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
