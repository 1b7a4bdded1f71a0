"""Removing a wrong answer: the request's exact entry and its vector, here and on every replica.

The key of the answer to remove is the key the request had: the prompt and parameters go through
the same stages as in ``add_request`` (chat rendering, vLLM's validation and tokenization, the
canonical key), so ``forget(prompt, params, scope=...)`` names exactly what ``generate(prompt,
params)`` in that scope was answered with. See :mod:`enhanced_llm.cache.invalidation` for how the
removal and the scope epochs reach the other replicas.
"""

from __future__ import annotations

from typing import Any

from vllm.sampling_params import SamplingParams

from ..options import OPTIONS_KEY
from . import stages
from .flow import RequestFlow

__all__ = ["forget_request"]


def _scoped(params: SamplingParams | None, scope: str | None) -> SamplingParams:
    """``params`` with ``scope`` as its tenant option (a copy; the caller's object is untouched)."""
    params = (params or SamplingParams()).clone()
    if scope is not None:
        extra = dict(params.extra_args or {})
        extra[OPTIONS_KEY] = {**dict(extra.get(OPTIONS_KEY) or {}), "scope": scope}
        params.extra_args = extra
    return params


async def forget_request(engine: Any, prompt: Any, params: SamplingParams | None, scope: str | None, kwargs: dict[str, Any]) -> bool:
    """Forget the stored answer to ``generate(prompt, params, **kwargs)`` in ``scope``.

    True when an entry was found (in memory or in Redis). Raises what ``generate`` would raise for
    an invalid request (vLLM's own validation); a request the cache never stores returns False.
    """
    cache = engine.cache_manager
    if cache is None:
        return False
    flow = RequestFlow("forget", _scoped(params, scope), dict(kwargs))
    prompt = await stages.prepare_prompt(engine, flow, prompt, enhance=False)
    flow.plan = stages.plan(engine, flow)
    if not flow.plan.cacheable:
        return False
    await stages.validate(engine, flow, prompt)
    stages.build_key(engine, flow, prompt)
    key = flow.plan.key
    if key is None:
        return False
    found = await cache.get_quiet(key.exact) is not None
    await cache.delete(key.exact)
    if engine.similarity_helper is not None:
        await engine.similarity_helper.remove(key.exact)  # its store announces it to the other replicas
    await engine.invalidations.announce_key(key.exact)
    return found
