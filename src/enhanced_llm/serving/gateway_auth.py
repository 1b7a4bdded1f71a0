"""Who may call the gateway: the ``X-API-Key`` check (one function, meant to be replaced by the tenant model).

With ``--api-key`` (or ``VLLM_API_KEY``) the gateway's routes and gRPC require one of
those keys in ``X-API-Key`` (``Authorization: Bearer`` is accepted too, as on ``/v1``).
Without keys every caller is accepted, as vLLM's own routes do.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable, Mapping

__all__ = ["ApiKeys"]


class ApiKeys:
    """The server's keys, compared in constant time (digests, every key compared)."""

    def __init__(self, keys: Iterable[str | None]) -> None:
        self._digests = [hashlib.sha256(k.encode()).digest() for k in keys if k]

    @classmethod
    def from_args(cls, args: object) -> ApiKeys:
        """As vLLM: ``--api-key`` values, else ``VLLM_API_KEY``."""
        import vllm.envs as envs

        return cls(getattr(args, "api_key", None) or [envs.VLLM_API_KEY])

    @property
    def required(self) -> bool:
        return bool(self._digests)

    def allows(self, headers: Mapping[str, str]) -> bool:
        """True when no key is configured or ``headers`` (lower-case names) carry a valid one."""
        if not self._digests:
            return True
        key = headers.get("x-api-key")
        if key is None:
            scheme, _, token = (headers.get("authorization") or "").partition(" ")
            key = token if scheme.lower() == "bearer" and token else None
        if not key:
            return False
        digest = hashlib.sha256(key.encode()).digest()
        match = False
        for known in self._digests:
            match |= secrets.compare_digest(digest, known)
        return match
