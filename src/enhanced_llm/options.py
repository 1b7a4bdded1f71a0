"""Per-request cache control and the plan the engine follows for one request.

Options travel in vLLM's own extension point, ``SamplingParams.extra_args["enhanced_llm"]``
(over HTTP: the request body's ``vllm_xargs``), so they reach ``add_request`` from every path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from vllm.exceptions import VLLMValidationError

from .cache.keys import RequestKey

__all__ = ["OPTIONS_KEY", "CacheMode", "RequestOptions", "CachePlan"]

#: The key of ``SamplingParams.extra_args`` that carries our per-request options.
OPTIONS_KEY = "enhanced_llm"
CacheMode = Literal["default", "bypass", "refresh", "no-store"]
_CACHE_MODES = ("default", "bypass", "refresh", "no-store")


@dataclass(frozen=True, slots=True)
class RequestOptions:
    """Per-request control, from ``extra_args["enhanced_llm"]`` (vLLM's own extension point).

    ``scope``: tenant; requests of different scopes never share cache entries.
    ``cache``: ``"bypass"`` (no lookup, no store), ``"refresh"`` (no lookup, store the
    new answer), ``"no-store"`` (lookup, never store), or ``"default"``.
    """

    scope: str = ""
    cache: CacheMode = "default"

    @classmethod
    def from_params(cls, params: Any) -> RequestOptions:
        extra = getattr(params, "extra_args", None) or {}
        raw = extra.get(OPTIONS_KEY) if isinstance(extra, dict) else None
        if raw is None:
            return _DEFAULT_OPTIONS
        if not isinstance(raw, dict):
            raise VLLMValidationError(f"extra_args[{OPTIONS_KEY!r}] must be an object", parameter=OPTIONS_KEY, value=raw)
        unknown = set(raw) - {"scope", "cache"}
        if unknown:
            raise VLLMValidationError(f"unknown {OPTIONS_KEY} option(s): {sorted(unknown)}", parameter=OPTIONS_KEY)
        scope, cache = raw.get("scope") or "", raw.get("cache") or "default"
        if not isinstance(scope, str) or len(scope) > 256:
            raise VLLMValidationError("scope must be a string of at most 256 characters", parameter="scope", value=scope)
        if cache not in _CACHE_MODES:
            raise VLLMValidationError(f"cache must be one of {_CACHE_MODES}", parameter="cache", value=cache)
        return cls(scope=scope, cache=cache)


_DEFAULT_OPTIONS = RequestOptions()


@dataclass(slots=True)
class CachePlan:
    """What the cache will do with one request."""

    key: RequestKey | None
    options: RequestOptions
    status: str

    @property
    def cacheable(self) -> bool:
        """Whether the cache takes part (keys are built after validation)."""
        return self.status not in ("disabled", "bypass") and not self.status.startswith("uncacheable")

    @property
    def read(self) -> bool:
        return self.key is not None and self.options.cache in ("default", "no-store")

    @property
    def store(self) -> bool:
        return self.key is not None and self.options.cache in ("default", "refresh")
