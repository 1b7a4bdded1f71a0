"""The envelope around every value the exact cache writes to Redis: format, integrity, bounds.

Redis is shared; whatever is read back from it is untrusted input. On the wire (version 2)::

    b"ELC" | version (2) | flags | [32-byte HMAC-SHA256, when flags has SIGNED] | body

``flags`` holds the codec in its low bits (0: raw msgpack, 1: zstd) and ``SIGNED`` (0x80). The
HMAC covers the header, the cache key (length-prefixed, so no key/body split is ambiguous) and
the body: a value copied under another key, altered, or written by someone without the key
fails :meth:`Envelope.open`. Opening is bounded: a value longer than ``max_bytes`` or one that
would decompress to more than ``max_bytes`` is refused without producing that output (zstd
frames are decoded into a buffer of at most ``max_bytes``; the decoder's window is capped).

Every refusal is a :class:`~enhanced_llm.errors.CorruptEntryError` (a subclass says which kind),
which the cache counts as a miss and deletes.
"""

from __future__ import annotations

import hmac
import io
import threading

from ..errors import CorruptEntryError

__all__ = ["Envelope", "ENVELOPE_VERSION", "BadSignatureError", "OversizedEntryError"]

ENVELOPE_VERSION = 2
_MAGIC = b"ELC"
_RAW, _ZSTD = 0, 1
_CODEC_MASK, _SIGNED = 0x0F, 0x80
_MAC_LEN = 32
_HEADER = len(_MAGIC) + 2
_MAX_WINDOW = 1 << 23  # our compressor (level <= 19 on values <= a few MiB) stays below this


class BadSignatureError(CorruptEntryError):
    """Signing is on and the value carries no signature, or one that does not verify."""


class OversizedEntryError(CorruptEntryError):
    """The value, or what it decompresses to, is longer than the configured bound."""


class Envelope:
    """Seals payloads for one cache (optional signing key, compression, byte bound) and opens them."""

    def __init__(
        self, *, signing_key: bytes | None = None, max_bytes: int = 16 << 20,
        compress: bool = True, min_bytes: int = 512, level: int = 3,
    ) -> None:
        self._key = signing_key or None
        # keyed once: each MAC copies the keyed state instead of deriving it again
        self._mac_base = hmac.new(self._key, digestmod="sha256") if self._key is not None else None
        self.max_bytes = max_bytes
        self._compress = compress
        self._min_bytes = min_bytes
        self._level = level
        self._local = threading.local()  # zstd contexts are not thread-safe; creating one costs ~60 us

    @property
    def signed(self) -> bool:
        return self._key is not None

    def seal(self, key: str, payload: bytes) -> bytes:
        codec, body = _RAW, payload
        if self._compress and len(payload) >= self._min_bytes:
            codec, body = _ZSTD, self._zstd()[0].compress(payload)
        flags = codec | (_SIGNED if self._key is not None else 0)
        header = _MAGIC + bytes((ENVELOPE_VERSION, flags))
        if self._key is None:
            return header + body
        return header + self._mac(header, key, body) + body

    def open(self, key: str, data: bytes) -> bytes:
        """The payload sealed under ``key``; raises :class:`CorruptEntryError` (or a subclass) otherwise."""
        if len(data) > self.max_bytes:
            raise OversizedEntryError(f"value of {len(data)} bytes, bound {self.max_bytes}")
        if len(data) < _HEADER or data[:3] != _MAGIC or data[3] != ENVELOPE_VERSION:
            raise CorruptEntryError("not an enhanced-llm entry of this version")
        flags = data[4]
        codec = flags & _CODEC_MASK
        if codec not in (_RAW, _ZSTD) or flags & ~(_CODEC_MASK | _SIGNED):
            raise CorruptEntryError(f"unknown envelope flags {flags:#x}")
        body_at = _HEADER + (_MAC_LEN if flags & _SIGNED else 0)
        if len(data) < body_at:
            raise CorruptEntryError("truncated envelope")
        body = memoryview(data)[body_at:]
        if self._key is not None:
            if not flags & _SIGNED:
                raise BadSignatureError("unsigned value (signing is on)")
            expected = self._mac(data[:_HEADER], key, body)
            if not hmac.compare_digest(expected, data[_HEADER:body_at]):
                raise BadSignatureError("signature does not verify")
        return bytes(body) if codec == _RAW else self._decompress(body)

    def _mac(self, header: bytes, key: str, body: bytes | memoryview) -> bytes:
        assert self._mac_base is not None
        encoded = key.encode("utf-8")
        mac = self._mac_base.copy()
        mac.update(b"".join((header, len(encoded).to_bytes(4, "big"), encoded)))
        mac.update(body)
        return mac.digest()

    def _zstd(self) -> tuple:
        """This thread's (compressor, decompressor)."""
        pair = getattr(self._local, "pair", None)
        if pair is None:
            import zstandard

            pair = self._local.pair = (
                zstandard.ZstdCompressor(level=self._level), zstandard.ZstdDecompressor(max_window_size=_MAX_WINDOW)
            )
        return pair

    def _decompress(self, body: memoryview) -> bytes:
        import zstandard

        try:
            size = zstandard.frame_content_size(body)
            if size > self.max_bytes:
                raise OversizedEntryError(f"value decompresses to {size} bytes, bound {self.max_bytes}")
            dctx = self._zstd()[1]
            if size >= 0:  # known size (what we write): one buffer of exactly that size
                out = dctx.decompress(body, max_output_size=size)
                if len(out) != size:
                    raise CorruptEntryError("frame shorter than its declared size")
                return out
            with dctx.stream_reader(io.BytesIO(body)) as reader:  # unknown size: read up to the bound
                out = reader.read(self.max_bytes + 1)
        except CorruptEntryError:
            raise
        except Exception as exc:  # zstd raises ZstdError and ValueError
            raise CorruptEntryError(f"undecodable zstd body: {exc}") from exc
        if len(out) > self.max_bytes:
            raise OversizedEntryError(f"value decompresses past the bound {self.max_bytes}")
        return out
