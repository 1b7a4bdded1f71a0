"""The stages of a request before it reaches the engine: prompt, plan, validation, keys.

Each is a small function of the engine and the request's :class:`~.flow.RequestFlow`; the
order in which :meth:`EnhancedAsyncLLM.add_request` runs them is the request path.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import AsyncGenerator, Mapping
from typing import Any

from vllm.pooling_params import PoolingParams
from vllm.renderers.inputs.preprocess import extract_prompt_components
from vllm.sampling_params import SamplingParams
from vllm.v1.engine import EngineCoreRequest
from vllm.v1.engine.async_llm import AsyncLLM
from vllm.v1.engine.exceptions import EngineDeadError

from ..cache.keys import Uncacheable
from ..enrichment import context_block, prompt_text
from ..options import CachePlan, RequestOptions
from .flow import RequestFlow


__all__ = ["passes_through", "bind_arguments", "prepare_prompt", "plan", "validate", "build_key"]

_ADD_REQUEST = inspect.signature(AsyncLLM.add_request)


def passes_through(prompt: Any, params: Any) -> bool:
    """Requests the cache never touches: pooling, streaming input, pre-built engine requests."""
    return isinstance(params, PoolingParams) or isinstance(prompt, (AsyncGenerator, EngineCoreRequest))


def bind_arguments(request_id: str, prompt: Any, params: Any, args: tuple, kwargs: dict[str, Any]) -> dict[str, Any]:
    """``add_request``'s optional arguments by name, however they were passed (vLLM's signature
    changes between releases; unknown names are kept and forwarded)."""
    if not args:
        return dict(kwargs)
    bound = _ADD_REQUEST.bind_partial(None, request_id, prompt, params, *args, **kwargs).arguments
    for name in ("self", "request_id", "prompt", "params"):
        bound.pop(name, None)
    return dict(bound)


async def prepare_prompt(engine: Any, flow: RequestFlow, prompt: Any, enhance: bool = True) -> Any:
    """Chat messages are rendered with the model's template; opt-in context enhancement is applied."""
    messages = prompt.get("messages") if isinstance(prompt, Mapping) and "messages" in prompt else None
    rendered = engine.render_chat(messages) if messages is not None else None
    context, text = engine.keys.split(rendered if rendered is not None else prompt_text(prompt))
    if context is None and messages is not None:
        text = _last_user_message(messages)
    added: list[dict[str, Any]] = []
    if enhance and text and engine.handler_config.features.enable_context_enhancement:
        scope = engine.keys.scope(
            flow.params, tenant=RequestOptions.from_params(flow.params).scope,
            lora_request=flow.lora_request, kwargs=flow.kwargs, context=context,
            epoch=engine.invalidations.epoch(RequestOptions.from_params(flow.params).scope),
        ).hex()
        added = await engine.enricher.enhance(text, scope, engine.cache_manager)
        flow.meta.context_added = added
    if messages is not None:
        if added:
            return engine.render_chat([{"role": "system", "content": context_block(added).strip()}, *messages])
        return rendered
    if added and isinstance(prompt, str):
        return context_block(added) + prompt
    if added:
        return {**prompt, "prompt": context_block(added) + prompt["prompt"]}
    return prompt


def plan(engine: Any, flow: RequestFlow) -> CachePlan:
    """What the cache does with the request, before its keys exist. Bad options raise
    ``VLLMValidationError``; anything that makes a request uncacheable makes it direct."""
    options = RequestOptions.from_params(flow.params)
    cache = engine.cache_manager
    if cache is None:
        return CachePlan(None, options, "disabled")
    if options.cache == "bypass":
        cache.stats.bypassed += 1
        return CachePlan(None, options, "bypass")
    reason = _uncacheable_reason(flow.params, engine.cache_config.cache_unseeded_sampling)
    if reason is not None:
        cache.stats.uncacheable += 1
        return CachePlan(None, options, f"uncacheable:{reason}")
    return CachePlan(None, options, "miss" if options.cache == "default" else options.cache)


def _uncacheable_reason(params: SamplingParams, unseeded_ok: bool) -> str | None:
    if not isinstance(params, SamplingParams):
        return f"params_type:{type(params).__name__}"
    if params.logprobs is not None or params.prompt_logprobs is not None:
        return "logprobs"  # cached answers do not carry logprobs
    if not unseeded_ok and params.temperature > 0 and params.seed is None:
        return "unseeded_sampling"
    return None


async def validate(engine: Any, flow: RequestFlow, prompt: Any) -> None:
    """vLLM's own input processing (the code ``AsyncLLM.add_request`` runs), before any cache
    level: a request plain vLLM rejects raises the same error here. Keeps the validated request
    (tokenized prompt, request-local params) for the hand-off, so a miss is processed once."""
    if engine.errored:
        raise EngineDeadError()
    processor = engine.input_processor
    kw = flow.kwargs
    arguments = dict(
        supported_tasks=await engine.get_supported_tasks(),
        arrival_time=kw.get("arrival_time"),
        lora_request=kw.get("lora_request"),
        tokenization_kwargs=kw.get("tokenization_kwargs"),
        trace_headers=kw.get("trace_headers"),
        priority=kw.get("priority", 0),
        data_parallel_rank=kw.get("data_parallel_rank"),
        session_id=kw.get("session_id"),
        kv_hints=kw.get("kv_hints"),
    )
    if (isinstance(prompt, dict) and "type" in prompt) or _short(prompt):
        # Rendered by vLLM's renderer (the OpenAI server), or short enough that tokenizing it here
        # (~0.05 ms) costs less than the hop to the tokenizer thread (~0.1 ms on these CPUs).
        request = processor.process_inputs(flow.request_id, prompt, flow.params, **arguments)
    else:  # long raw prompts are tokenized off the event loop, as vLLM does
        request = await processor.process_inputs_async(flow.request_id, prompt, flow.params, **arguments)
    flow.engine_request = request
    flow.prompt_text = extract_prompt_components(engine.model_config, prompt)[0]
    flow.prompt_token_ids = request.prompt_token_ids or []


#: Raw text prompts up to this many characters are tokenized on the event loop.
SHORT_PROMPT_CHARS = 1024


def _short(prompt: Any) -> bool:
    text = prompt if isinstance(prompt, str) else prompt.get("prompt") if isinstance(prompt, Mapping) else None
    if isinstance(prompt, Mapping) and set(prompt) - {"prompt", "cache_salt"}:
        return False  # token ids, multimodal data ...: vLLM's own path
    return isinstance(text, str) and len(text) <= SHORT_PROMPT_CHARS


def build_key(engine: Any, flow: RequestFlow, prompt: Any) -> None:
    """The request's keys, from the caller's parameters (the validated request's only add vLLM's
    defaults); ``max_tokens`` for the semantic fit check is the effective one. Uncacheable
    prompts become direct."""
    assert flow.plan is not None and engine.cache_manager is not None
    params = flow.params
    room = engine.model_config.max_model_len - len(flow.prompt_token_ids)
    validated = flow.engine_request.sampling_params if flow.engine_request is not None else params
    try:
        key = engine.keys.build(
            prompt, params, tenant=flow.plan.options.scope, lora_request=flow.lora_request, kwargs=flow.kwargs,
            open_ended=params.max_tokens is None or params.max_tokens >= room,
            epoch=engine.invalidations.epoch(flow.plan.options.scope),
        )
        flow.plan.key = dataclasses.replace(key, max_tokens=validated.max_tokens)
        return
    except Uncacheable as exc:
        reason = exc.reason
    except Exception as exc:  # a key we cannot build is a pass-through, never an error
        reason = f"key_error:{type(exc).__name__}"
    engine.cache_manager.stats.uncacheable += 1
    flow.plan.status = f"uncacheable:{reason}"


def _last_user_message(messages: Any) -> str | None:
    for message in reversed(messages or []):
        if isinstance(message, Mapping) and message.get("role") == "user" and isinstance(message.get("content"), str):
            return message["content"]
    return None
