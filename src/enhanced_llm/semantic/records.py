"""What the semantic store writes to Redis, and the checks every value read back passes.

Nothing read from Redis is trusted: anyone who can write to the server can plant keys under our
prefix or records on our stream. An entry (the value of ``{ns}e:{entry_id}`` and the ``data``
field of an ``add`` record) is::

    unsigned:  msgpack [scope: str, question: str, vector: float32 bytes, unix time: float]
    signed:    b"\\x01" + HMAC-SHA256(key, ns NUL "add" NUL entry_id NUL body) + body

and a ``del`` record carries ``sig`` = HMAC-SHA256(key, ns NUL "del" NUL entry_id) when signing.
The MAC binds the value to its namespace (model) and entry id, so a signed value cannot be moved
to another entry, another model or another scope (the scope is inside the body).

On read, :class:`EntryCodec` checks the size (``max_value_bytes``), the signature (with a key, an
unsigned or wrongly signed value is refused; without one, a signed value is read unverified), the
schema (types, via msgspec), the entry id (1-512 bytes), the vector (``dim`` float32 values,
finite, unit norm: a vector of norm 100 would otherwise outscore every honest entry) and the
question (not empty). A value that fails is counted in :attr:`EntryCodec.rejected` under its
reason and skipped: never served, never raised.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["EntryCodec", "StoredEntry", "signing_key_bytes"]

_SIGNED = 1  # first byte of a signed value (an unsigned one is a msgpack array: 0x94)
_MAC_BYTES = 32
MAX_ID_BYTES = 512
MAX_ORIGIN_BYTES = 64
_NORM_TOLERANCE = 1e-2  # embeddings are normalised; float32 rounding is far below this


@dataclass(frozen=True, slots=True)
class StoredEntry:
    """One entry read from Redis (or a removal: ``vector`` None)."""

    entry_id: str
    scope: str
    question: str
    vector: np.ndarray | None  # None for a removal


def signing_key_bytes(key: Any) -> bytes | None:
    """The key as bytes: ``str`` (UTF-8), ``bytes``, a pydantic ``SecretStr``/``SecretBytes``, or None."""
    if key is None:
        return None
    if hasattr(key, "get_secret_value"):
        key = key.get_secret_value()
    if isinstance(key, str):
        key = key.encode()
    if not isinstance(key, (bytes, bytearray)) or not key:
        raise ValueError("signing_key must be a non-empty str or bytes")
    return bytes(key)


class EntryCodec:
    """Packs entries for one namespace and validates what comes back (counting what it refuses)."""

    def __init__(self, namespace: str, *, dim: int | None, signing_key: Any = None, max_value_bytes: int = 64 << 10) -> None:
        import msgspec

        self.ns = namespace.encode()
        self.dim = dim
        self.key = signing_key_bytes(signing_key)
        self.max_value_bytes = max(1, max_value_bytes)
        self._enc = msgspec.msgpack.Encoder()
        self._dec = msgspec.msgpack.Decoder(tuple[str, str, bytes, float])
        self.rejected: Counter[str] = Counter()
        self.refused_writes = 0  # values too large to store (they would be refused on read)

    @property
    def signing(self) -> bool:
        return self.key is not None

    # -- writing -------------------------------------------------------------------------------

    def pack(self, entry_id: str, scope: str, question: str, vector: np.ndarray) -> bytes | None:
        """The stored value, or None when it would exceed ``max_value_bytes`` (nothing is written)."""
        vec = np.ascontiguousarray(vector, dtype=np.float32).tobytes()
        body = self._enc.encode((scope, question, vec, time.time()))
        raw = body if self.key is None else bytes([_SIGNED]) + self._mac(b"add", entry_id, body) + body
        if len(raw) > self.max_value_bytes:
            self.refused_writes += 1
            return None
        return raw

    def del_signature(self, entry_id: str) -> bytes | None:
        return None if self.key is None else self._mac(b"del", entry_id, b"")

    def _mac(self, op: bytes, entry_id: str, body: bytes) -> bytes:
        assert self.key is not None
        msg = b"\0".join((self.ns, op, entry_id.encode(), body))
        return hmac.new(self.key, msg, hashlib.sha256).digest()

    # -- reading -------------------------------------------------------------------------------

    def _refuse(self, reason: str) -> None:
        self.rejected[reason] += 1
        return None

    def unpack(self, entry_id: Any, raw: Any) -> StoredEntry | None:
        """A validated entry, or None (counted) for anything that is not one of ours, intact."""
        if not valid_id(entry_id):
            return self._refuse("bad_id")
        if not isinstance(raw, (bytes, bytearray)) or not raw:
            return self._refuse("malformed")
        if len(raw) > self.max_value_bytes:
            return self._refuse("oversized")
        raw = bytes(raw)
        if raw[0] == _SIGNED:
            if len(raw) <= 1 + _MAC_BYTES:
                return self._refuse("malformed")
            mac, body = raw[1 : 1 + _MAC_BYTES], raw[1 + _MAC_BYTES :]
            if self.key is not None and not hmac.compare_digest(mac, self._mac(b"add", entry_id, body)):
                return self._refuse("bad_signature")
        elif self.key is not None:
            return self._refuse("unsigned")
        else:
            body = raw
        try:
            scope, question, vec, ts = self._dec.decode(body)
        except Exception:  # noqa: BLE001 - msgspec.DecodeError / ValidationError: not our schema
            return self._refuse("malformed")
        if not question or not math.isfinite(ts):
            return self._refuse("malformed")
        vector = self._vector(vec)
        if vector is None:
            return self._refuse("bad_vector")
        return StoredEntry(entry_id, scope, question, vector)

    def _vector(self, vec: bytes) -> np.ndarray | None:
        if len(vec) % 4 or (self.dim is not None and len(vec) != 4 * self.dim) or not vec:
            return None
        v = np.frombuffer(vec, dtype=np.float32)
        if not np.isfinite(v).all():
            return None
        if abs(float(np.linalg.norm(v)) - 1.0) > _NORM_TOLERANCE:
            return None
        return v

    def record(self, fields: Any, own_origin: str) -> StoredEntry | None:
        """One change-stream record: an addition, a removal, or None (ours, or refused and counted)."""
        if not isinstance(fields, dict):
            return self._refuse("bad_record")
        f = {_text(k): v for k, v in fields.items()}
        op, entry_id, origin = _text(f.get("op")), _text(f.get("id")), _text(f.get("origin"))
        if op is None or entry_id is None or origin is None or len(origin) > MAX_ORIGIN_BYTES:
            return self._refuse("bad_record")
        if origin == own_origin:
            return None
        if op == "add":
            return self.unpack(entry_id, f.get("data"))
        if op != "del":
            return self._refuse("bad_record")
        if not valid_id(entry_id):
            return self._refuse("bad_id")
        if self.key is not None:
            sig = f.get("sig")
            if not isinstance(sig, bytes):
                return self._refuse("unsigned")
            if not hmac.compare_digest(sig, self._mac(b"del", entry_id, b"")):
                return self._refuse("bad_signature")
        return StoredEntry(entry_id, "", "", None)


def valid_id(entry_id: Any) -> bool:
    return isinstance(entry_id, str) and 0 < len(entry_id.encode("utf-8", "surrogatepass")) <= MAX_ID_BYTES


def _text(v: Any) -> str | None:
    """A stream field as text (None when it is missing or not UTF-8)."""
    if isinstance(v, str):
        return v
    if isinstance(v, (bytes, bytearray)):
        try:
            return bytes(v).decode()
        except UnicodeDecodeError:
            return None
    return None
