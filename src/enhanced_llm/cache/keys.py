"""Canonical request keys.

A request's **exact key** names its answer: the same key means the engine
would produce the same output. It hashes, in a canonical encoding:

* the model fingerprint (name or path, revision, tokenizer, dtype, quantization),
* the LoRA adapter (name, id, path),
* every ``SamplingParams`` field that can change the output (all public fields
  but the ones in :data:`IGNORED_PARAMS`; new vLLM fields are included by
  default, so an unknown field can only cause a miss, never a wrong hit),
* ``extra_args`` without our own ``"enhanced_llm"`` control key,
* output-affecting ``add_request`` keyword arguments (e.g. ``tokenization_kwargs``),
* the tenant scope,
* the prompt: its text, or its token ids (a different namespace from text).

The **scope key** is the same hash without the prompt: the semantic cache only compares
questions that share it. In the scope, a ``max_tokens`` that reaches the end of the context
(``max_model_len`` minus the prompt: what vLLM and its server fill in when the client sets
none) counts as "open-ended", so two paraphrases of different lengths still share a scope;
the semantic cache then checks that a stored answer fits the request's own ``max_tokens``.
A prompt's ``cache_salt`` is part of the scope, so it separates exact and semantic entries alike. For a prompt rendered with the model's chat
template (see :mod:`.chat_turns`), the **question** is the last user message and
the conversation before it joins the scope, so paraphrases only match within the
same conversation (same system prompt, same earlier turns).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from .chat_turns import ChatLayout

__all__ = [
    "IGNORED_PARAMS",
    "IGNORED_KWARGS",
    "RequestKey",
    "KeyBuilder",
    "Uncacheable",
    "model_fingerprint",
]

#: SamplingParams fields that change how output is delivered, not what it is.
IGNORED_PARAMS = frozenset({"output_kind", "stream_interval", "skip_clone", "skip_reading_prefix_cache", "extra_args"})
#: add_request keyword arguments that never change the output.
IGNORED_KWARGS = frozenset(
    {"arrival_time", "trace_headers", "priority", "data_parallel_rank", "session_id", "prompt_text", "kv_hints", "lora_request"}
)
#: Keys of a prompt dict that do not change the output.
_IGNORED_PROMPT_KEYS = frozenset({"type", "arrival_time", "prompt_token_offsets"})

_encoder = msgspec.json.Encoder(order="sorted")


class Uncacheable(Exception):
    """Raised by :meth:`KeyBuilder.build` for a request the cache must pass straight through."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class RequestKey:
    """The keys of one request."""

    exact: str
    """Hex digest naming the answer (scope + max_tokens + prompt)."""
    scope: str
    """Hex digest of everything but the question: the semantic cache's partition."""
    question: str | None
    """The prompt text, or a chat prompt's last user message (what the semantic cache and NLP look at)."""
    max_tokens: int | None = None
    """The request's ``max_tokens`` (a semantic hit must fit it)."""


def model_fingerprint(model_config: Any) -> dict[str, Any]:
    """The parts of vLLM's ``ModelConfig`` that decide what a prompt produces."""
    names = ("model", "revision", "tokenizer", "tokenizer_revision", "dtype", "quantization", "seed")
    return {name: str(getattr(model_config, name, None)) for name in names}


class KeyBuilder:
    """Builds :class:`RequestKey` for one engine (its model fingerprint and namespace)."""

    def __init__(self, fingerprint: Mapping[str, Any], namespace: str = "", chat_layout: ChatLayout | None = None) -> None:
        self._base = _encoder.encode({"model": dict(fingerprint), "namespace": namespace})
        self.chat_layout = chat_layout

    def build(
        self,
        prompt: Any,
        params: Any,
        *,
        tenant: str = "",
        lora_request: Any = None,
        kwargs: Mapping[str, Any] | None = None,
        open_ended: bool = False,
        epoch: tuple[int, int] = (0, 0),
    ) -> RequestKey:
        """Return the keys, or raise :class:`Uncacheable` with the reason. ``open_ended``: the
        request's ``max_tokens`` reaches the end of the context (see the module docstring);
        ``epoch``: the (global, tenant) epochs of :mod:`.invalidation` (raised to forget a scope)."""
        kind, salt, body, text = _canonical_prompt(prompt)
        max_tokens = getattr(params, "max_tokens", None)
        scope = self._scope_digest(
            params, tenant, lora_request, kwargs or {}, salt, None if open_ended else max_tokens, epoch
        )
        exact = hashlib.blake2b(
            scope + b"max_tokens:" + str(max_tokens).encode() + b"\0" + kind + body, digest_size=16
        ).hexdigest()
        context, question = self.split(text)
        return RequestKey(exact=exact, scope=_with_context(scope, context).hex(), question=question, max_tokens=max_tokens)

    def split(self, text: str | None) -> tuple[str | None, str | None]:
        """``(context, question)``: a rendered chat prompt's conversation and last user message,
        or ``(None, text)`` for any other prompt."""
        parts = self.chat_layout.split(text) if self.chat_layout is not None and text else None
        return parts if parts is not None else (None, text)

    def scope(
        self, params: Any, *, tenant: str = "", lora_request: Any = None, kwargs: Mapping[str, Any] | None = None,
        context: str | None = None, salt: str | None = None, epoch: tuple[int, int] = (0, 0),
    ) -> bytes:
        """The semantic scope digest: everything that decides the answer except the question
        (with a chat ``context``: within that conversation)."""
        max_tokens = getattr(params, "max_tokens", None)
        digest = self._scope_digest(params, tenant, lora_request, kwargs or {}, salt, max_tokens, epoch)
        return _with_context(digest, context)

    def _scope_digest(
        self, params: Any, tenant: str, lora_request: Any, kwargs: Mapping[str, Any], salt: str | None,
        max_tokens: int | None, epoch: tuple[int, int],
    ) -> bytes:
        scope_doc = {
            "params": _canonical_params(params),
            "max_tokens": max_tokens,
            "epoch": list(epoch),
            "lora": _canonical_lora(lora_request),
            "kwargs": _canonical_kwargs(kwargs),
            "tenant": tenant,
            "cache_salt": salt,
        }
        try:
            scope_bytes = self._base + _encoder.encode(scope_doc)
        except (TypeError, msgspec.EncodeError) as exc:
            raise Uncacheable("unhashable_params") from exc
        return hashlib.blake2b(scope_bytes, digest_size=16).digest()


def _with_context(scope: bytes, context: str | None) -> bytes:
    """``scope`` narrowed to one chat conversation (``context=None``: a plain prompt, unchanged)."""
    if context is None:
        return scope
    return hashlib.blake2b(scope + b"chat-context:" + _text_bytes(context), digest_size=16).digest()


def _canonical_prompt(prompt: Any) -> tuple[bytes, str | None, bytes, str | None]:
    """(namespace, cache salt, bytes, question text) for a text or token prompt."""
    if isinstance(prompt, str):
        return b"T", None, _text_bytes(prompt), prompt
    if not isinstance(prompt, Mapping):
        raise Uncacheable(f"prompt_type:{type(prompt).__name__}")
    if prompt.get("type", "token" if "prompt_token_ids" in prompt else "text") not in ("token", "text"):
        raise Uncacheable(f"prompt_input:{prompt.get('type')}")
    unknown = set(prompt) - _IGNORED_PROMPT_KEYS - {"prompt", "prompt_token_ids", "cache_salt"}
    if unknown:  # multimodal data, embeddings, encoder/decoder parts ...
        raise Uncacheable("prompt_fields:" + ",".join(sorted(map(str, unknown))))
    salt = str(prompt["cache_salt"]) if prompt.get("cache_salt") is not None else None
    text = prompt.get("prompt")
    if not (text is None or isinstance(text, str)):
        raise Uncacheable("prompt_type")
    token_ids = prompt.get("prompt_token_ids")
    if token_ids is not None:
        try:
            body = _encoder.encode([int(t) for t in token_ids])
        except (TypeError, ValueError) as exc:
            raise Uncacheable("prompt_token_ids") from exc
        return b"I", salt, body, text
    if text is None:
        raise Uncacheable("prompt_empty")
    return b"T", salt, _text_bytes(text), text


def _text_bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def _canonical_params(params: Any) -> dict[str, Any]:
    fields = getattr(params, "__struct_fields__", None)
    if fields is None:
        raise Uncacheable(f"params_type:{type(params).__name__}")
    doc = {f: getattr(params, f) for f in fields if not f.startswith("_") and f not in IGNORED_PARAMS}
    doc.pop("max_tokens", None)  # the scope has it normalised (see the module docstring)
    extra = dict(params.extra_args or {})
    extra.pop("enhanced_llm", None)
    doc["extra_args"] = extra or None
    return doc


def _canonical_lora(lora_request: Any) -> list[Any] | None:
    if lora_request is None:
        return None
    return [
        getattr(lora_request, "lora_name", None),
        getattr(lora_request, "lora_int_id", None),
        str(getattr(lora_request, "lora_path", None)),
    ]


def _canonical_kwargs(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in kwargs.items() if k not in IGNORED_KWARGS and v is not None}
