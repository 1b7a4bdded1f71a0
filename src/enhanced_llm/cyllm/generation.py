"""CY-LLM's generation keywords -> vLLM's ``SamplingParams`` and ``LoRARequest``.

The same mapping serves ``BaseEngine.infer(**kwargs)``, the REST gateway's
``generation`` object and gRPC's ``GenerationParameters``; the defaults are the
gateway's documented ones (seed 001).
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["GenerationOptions", "DEFAULT_GENERATION", "build_sampling_params", "lora_request_for", "split_infer_kwargs"]

logger = logging.getLogger(__name__)

#: The key of ``SamplingParams.extra_args`` that carries the cache options (see ``enhanced_llm.engine``).
OPTIONS_KEY = "enhanced_llm"


@dataclass(frozen=True, slots=True)
class GenerationOptions:
    """CY-LLM's generation parameters, validated when the sampling parameters are built."""

    max_new_tokens: int = 256
    """Most tokens to generate (``maxNewTokens``)."""
    temperature: float = 0.7
    """Sampling temperature, 0 (greedy) to 2."""
    top_p: float = 0.95
    """Nucleus sampling mass, (0, 1]."""
    repetition_penalty: float = 1.0
    """vLLM's repetition penalty (> 0; 1 is none)."""


DEFAULT_GENERATION = GenerationOptions()

#: ``infer()`` keywords that are CY-LLM's generation parameters.
_GENERATION_KEYS = {"max_new_tokens", "temperature", "top_p", "repetition_penalty"}
#: ``infer()`` keywords for the enhanced engine's cache options (``extra_args["enhanced_llm"]``).
_CACHE_KEYS = {"cache_scope": "scope", "cache_mode": "cache"}


def build_sampling_params(
    options: GenerationOptions = DEFAULT_GENERATION,
    *,
    output_kind: Any = None,
    scope: str | None = None,
    cache_mode: str | None = None,
    **extra: Any,
) -> Any:
    """``SamplingParams`` for ``options``; ``scope``/``cache_mode`` go to ``extra_args["enhanced_llm"]``.

    ``extra`` holds further ``SamplingParams`` fields (``seed``, ``stop``, ``ignore_eos`` ...).
    ``output_kind`` defaults to DELTA (what the chunked streams read). Raises ``ValueError``
    (vLLM's own validation) for out-of-range values.
    """
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    if isinstance(options.max_new_tokens, bool) or not isinstance(options.max_new_tokens, int) or options.max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be a positive integer, got {options.max_new_tokens!r}")
    if not 0 <= options.temperature <= 2:
        raise ValueError(f"temperature must be within [0, 2], got {options.temperature!r}")
    cache_options = {k: v for k, v in (("scope", scope), ("cache", cache_mode)) if v}
    extra_args = dict(extra.pop("extra_args", None) or {})
    if cache_options:
        extra_args[OPTIONS_KEY] = {**(extra_args.get(OPTIONS_KEY) or {}), **cache_options}
    return SamplingParams(
        max_tokens=options.max_new_tokens,
        temperature=float(options.temperature),
        top_p=float(options.top_p),
        repetition_penalty=float(options.repetition_penalty),
        output_kind=RequestOutputKind.DELTA if output_kind is None else output_kind,
        extra_args=extra_args or None,
        **extra,
    )


def lora_request_for(adapter: str | None, known: Mapping[str, Any] | None = None) -> Any:
    """The ``LoRARequest`` for ``adapter``: a name the server knows (``--lora-modules``), else a path.

    A path's adapter id is derived from the path itself, so every process (and every
    replica sharing a Redis cache) gives one adapter the same id and cache key.
    """
    if not adapter:
        return None
    if known and adapter in known:
        return known[adapter]
    from vllm.lora.request import LoRARequest

    path = os.path.abspath(os.path.expanduser(adapter)) if os.path.exists(os.path.expanduser(adapter)) else adapter
    lora_id = int.from_bytes(hashlib.sha256(path.encode()).digest()[:4], "big") % (2**31 - 1) + 1
    return LoRARequest(lora_name=path, lora_int_id=lora_id, lora_path=path)


def split_infer_kwargs(kwargs: dict[str, Any]) -> tuple[GenerationOptions, dict[str, Any], str | None, dict[str, Any]]:
    """Split ``infer(**kwargs)`` into generation options, cache options, adapter and other SamplingParams fields.

    Unknown keywords that are not ``SamplingParams`` fields are ignored with a warning
    (CY-LLM callers pass options other engines understand).
    """
    from vllm import SamplingParams

    generation = {k: kwargs.pop(k) for k in list(kwargs) if k in _GENERATION_KEYS}
    cache = {_CACHE_KEYS[k]: kwargs.pop(k) for k in list(kwargs) if k in _CACHE_KEYS}
    adapter = kwargs.pop("adapter_path", None) or kwargs.pop("adapter", None)
    fields = set(getattr(SamplingParams, "__struct_fields__", ()))
    passthrough = {k: kwargs.pop(k) for k in list(kwargs) if k in fields and not k.startswith("_") and k not in {"max_tokens", "output_kind"}}
    if kwargs:
        logger.warning("infer(): ignoring unknown keyword(s) %s", ", ".join(sorted(kwargs)))
    options = GenerationOptions(**{**_defaults(), **generation})
    return options, cache, adapter, passthrough


def _defaults() -> dict[str, Any]:
    return {
        "max_new_tokens": DEFAULT_GENERATION.max_new_tokens, "temperature": DEFAULT_GENERATION.temperature,
        "top_p": DEFAULT_GENERATION.top_p, "repetition_penalty": DEFAULT_GENERATION.repetition_penalty,
    }
