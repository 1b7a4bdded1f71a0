"""The stored cache entry and its versioned binary encoding.

An entry is the finished, successful answer to one request: every choice's
text and token ids plus the prompt token ids, enough to rebuild a
``RequestOutput`` equal to the engine's. On the wire (Redis) it is::

    b"ELC" + version byte + codec byte + msgpack payload   (codec 0: raw, 1: zstd)

Anything else under our key (corrupt, foreign, an older version) decodes to
:class:`~enhanced_llm.errors.CorruptEntryError`; the caller treats it as a miss
and deletes it.
"""

from __future__ import annotations

import time

import msgspec

from ..errors import CorruptEntryError

__all__ = ["CachedCompletion", "CacheEntry", "EntryCodec", "ENTRY_VERSION"]

ENTRY_VERSION = 1
_MAGIC = b"ELC"
_RAW, _ZSTD = 0, 1


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
    """Encodes entries to bytes and back; optionally zstd-compressed above a size."""

    def __init__(self, compress: bool = True, min_bytes: int = 512, level: int = 3) -> None:
        self._compress = compress
        self._min_bytes = min_bytes
        self._level = level
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder = msgspec.msgpack.Decoder(CacheEntry)

    def encode(self, entry: CacheEntry) -> bytes:
        payload = self._encoder.encode(entry)
        if self._compress and len(payload) >= self._min_bytes:
            import zstandard

            return _MAGIC + bytes((ENTRY_VERSION, _ZSTD)) + zstandard.ZstdCompressor(level=self._level).compress(payload)
        return _MAGIC + bytes((ENTRY_VERSION, _RAW)) + payload

    def decode(self, data: bytes, key: str | None = None) -> CacheEntry:
        """Decode; raise :class:`CorruptEntryError` for anything that is not our entry for ``key``."""
        if len(data) < 5 or data[:3] != _MAGIC or data[3] != ENTRY_VERSION or data[4] not in (_RAW, _ZSTD):
            raise CorruptEntryError("not an enhanced-llm entry of this version")
        payload = data[5:]
        try:
            if data[4] == _ZSTD:
                import zstandard

                payload = zstandard.ZstdDecompressor().decompress(payload)
            entry = self._decoder.decode(payload)
        except Exception as exc:  # zstd and msgspec raise several types
            raise CorruptEntryError(f"undecodable entry: {exc}") from exc
        if key is not None and entry.key != key:
            raise CorruptEntryError("entry stored under another key")
        return entry
