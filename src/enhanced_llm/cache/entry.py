"""The stored cache entry, its encoding, and what it costs in memory.

An entry is the finished, successful answer to one request: every choice's
text and token ids plus the prompt token ids, enough to rebuild a
``RequestOutput`` equal to the engine's. On the wire (Redis) it is a msgpack
payload inside the :mod:`.envelope` (format version, codec, optional HMAC,
bounds). Anything else under our key (corrupt, foreign, unsigned, oversized, an
older version) decodes to :class:`~enhanced_llm.errors.CorruptEntryError`; the
caller treats it as a miss and deletes it.
"""

from __future__ import annotations

import sys
import time

import msgspec

from ..errors import CorruptEntryError
from .envelope import ENVELOPE_VERSION, Envelope

__all__ = ["CachedCompletion", "CacheEntry", "EntryCodec", "ENTRY_VERSION", "resident_bytes"]

ENTRY_VERSION = ENVELOPE_VERSION


class CachedCompletion(msgspec.Struct, frozen=True):
    """One choice of a finished request (vLLM's ``CompletionOutput`` without logprobs)."""

    index: int
    """Choice index (0 .. n-1)."""
    text: str
    """The full generated text."""
    token_ids: list[int]
    """The full generated token ids."""
    cumulative_logprob: float | None
    """As reported by the engine (None unless computed)."""
    finish_reason: str
    """'stop' or 'length': only normally finished choices are stored."""
    stop_reason: int | str | None
    """The stop string or token that ended the choice, if any."""


class CacheEntry(msgspec.Struct, frozen=True):
    """A stored answer, keyed by the request's exact key."""

    key: str
    """The exact key it answers (checked on read: a foreign value is a miss)."""
    scope: str
    """The scope key (model, LoRA, parameters, tenant) it belongs to."""
    prompt: str | None
    """The prompt text as the engine reported it."""
    prompt_token_ids: list[int]
    """The prompt's token ids (vLLM's chat server requires them)."""
    completions: list[CachedCompletion]
    """All n choices, by index."""
    question: str | None = None
    """The question text the semantic cache indexes (None: not indexed)."""
    created_at: float = msgspec.field(default_factory=time.time)
    """Unix time of creation."""
    generation_seconds: float = 0.0
    """How long the engine took to produce it: what a hit saves."""

    @property
    def num_output_tokens(self) -> int:
        return sum(len(c.token_ids) for c in self.completions)


class EntryCodec:
    """Encodes entries to sealed bytes and back (see :class:`~.envelope.Envelope`)."""

    def __init__(
        self, compress: bool = True, min_bytes: int = 512, level: int = 3, *,
        signing_key: bytes | None = None, max_bytes: int = 16 << 20,
    ) -> None:
        self.envelope = Envelope(signing_key=signing_key, max_bytes=max_bytes, compress=compress, min_bytes=min_bytes, level=level)
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder = msgspec.msgpack.Decoder(CacheEntry)

    @property
    def max_bytes(self) -> int:
        return self.envelope.max_bytes

    def encode(self, entry: CacheEntry) -> bytes:
        return self.envelope.seal(entry.key, self._encoder.encode(entry))

    def decode(self, data: bytes, key: str) -> CacheEntry:
        """Decode; raise :class:`CorruptEntryError` (or a subclass) for anything that is not our entry for ``key``."""
        payload = self.envelope.open(key, data)
        try:
            entry = self._decoder.decode(payload)
        except Exception as exc:  # msgspec raises several types
            raise CorruptEntryError(f"undecodable entry: {exc}") from exc
        if entry.key != key:
            raise CorruptEntryError("entry stored under another key")
        return entry


# What CPython really allocates (64-bit): an int outside the small-int cache (28 bytes, in an
# 8-byte aligned block: 32), a float.
_INT, _FLOAT = (sys.getsizeof(10**6) + 7) // 8 * 8, sys.getsizeof(0.5)
_SMALL_INTS = 256  # -5..256 are shared singletons, held once by the interpreter


def _ids_bytes(ids: list[int]) -> int:
    return sys.getsizeof(ids) + _INT * sum(1 for t in ids if t > _SMALL_INTS or t < -5)


def _str_bytes(s: str | None) -> int:
    return 0 if s is None else sys.getsizeof(s)  # includes a cached UTF-8 copy when there is one


def resident_bytes(entry: CacheEntry) -> int:
    """Bytes the decoded entry holds in memory: the structs, texts and token id lists (not shared
    small ints). Measured against tracemalloc in tests/test_redis_hardening.py."""
    total = sys.getsizeof(entry) + _str_bytes(entry.key) + _str_bytes(entry.scope) + _str_bytes(entry.prompt)
    total += _str_bytes(entry.question) + _ids_bytes(entry.prompt_token_ids) + sys.getsizeof(entry.completions)
    total += 2 * _FLOAT  # created_at, generation_seconds
    for c in entry.completions:
        total += sys.getsizeof(c) + _str_bytes(c.text) + _ids_bytes(c.token_ids)
        total += 0 if c.cumulative_logprob is None else _FLOAT
        total += _str_bytes(c.stop_reason) if isinstance(c.stop_reason, str) else 0
    return total
