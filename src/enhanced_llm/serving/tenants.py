"""Who is calling, and which tenant's cache entries that caller may use.

The server decides the tenant; a client can only narrow within it.

* **Tenant keys** (``--tenant-keys FILE``): a JSON object mapping each API key to its tenant,
  ``{"key-of-alpha": "alpha", "key-of-beta": {"tenant": "beta", "allow_refresh": false}}``.
  The caller's tenant is the tenant of the key it authenticated with (``Authorization:
  Bearer KEY``; ``X-API-Key: KEY`` on the CY-LLM gateway routes under ``/api/``).
* **Plain keys** (vLLM's ``--api-key`` / ``VLLM_API_KEY``): every holder is tenant
  :data:`DEFAULT_TENANT`. **No keys**: every caller is that tenant (nobody is identified).
* **Client scope** (header ``X-Cache-Scope``, body ``vllm_xargs`` ``cache_scope`` /
  ``enhanced_llm.scope``): a sub-scope *within* the caller's tenant, never another tenant.
* **Trusted header** (``--trust-scope-header``, or ``"trust_scope_header": true`` for one key
  in the file, e.g. the gateway's): the header *is* the tenant. Only for deployments where a
  gateway in front sets that header and strips any client-sent one.

The engine's scope string is :func:`encode_scope` of ``[tenant, *sub_scopes]``, a JSON list, so
tenant ``a`` with sub-scope ``b`` (``["a","b"]``) never equals tenant ``a/b`` (``["a/b"]``).
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_TENANT", "MAX_TENANT_CHARS", "MAX_SUB_SCOPE_CHARS", "TenantPolicy", "KeyRing",
    "encode_scope", "decode_scope", "check_scope_name", "load_tenant_keys",
]

#: The tenant of ``--api-key`` holders, and of every caller when no key is configured.
DEFAULT_TENANT = "default"
#: Longest tenant name (in the tenant file, or a trusted header).
MAX_TENANT_CHARS = 64
#: Longest client sub-scope (header or body).
MAX_SUB_SCOPE_CHARS = 96
_MAX_SCOPE_CHARS = 256  # the engine's limit for the encoded scope


@dataclass(frozen=True, slots=True)
class TenantPolicy:
    """What one API key may do."""

    tenant: str
    """Tenant whose cache entries the key's requests use."""
    allow_refresh: bool = True
    """Whether ``cache_mode=refresh`` (overwrite the tenant's entry without reading it) is allowed."""
    allow_forget: bool = True
    """Whether ``DELETE /v1/cache`` (remove the tenant's entries) is allowed."""
    trust_scope_header: bool = False
    """Whether the scope header names the tenant for this key (a gateway's key), instead of a sub-scope."""

    @classmethod
    def from_json(cls, key_name: str, value: Any) -> TenantPolicy:
        if isinstance(value, str):
            value = {"tenant": value}
        if not isinstance(value, Mapping):
            raise ValueError(f"{key_name}: expected a tenant name or an object, got {type(value).__name__}")
        unknown = set(value) - {"tenant", "allow_refresh", "allow_forget", "trust_scope_header"}
        if unknown:
            raise ValueError(f"{key_name}: unknown field(s) {sorted(unknown)}")
        tenant = value.get("tenant")
        problem = check_scope_name(tenant, MAX_TENANT_CHARS)
        if problem:
            raise ValueError(f"{key_name}: tenant {problem}")
        flags = {}
        for flag in ("allow_refresh", "allow_forget", "trust_scope_header"):
            if flag in value:
                if not isinstance(value[flag], bool):
                    raise ValueError(f"{key_name}: {flag} must be true or false")
                flags[flag] = value[flag]
        return cls(tenant=tenant, **flags)


def check_scope_name(name: Any, max_chars: int) -> str | None:
    """Why ``name`` is not a valid tenant or sub-scope (None when it is): a non-empty string of
    printable characters without surrounding whitespace, at most ``max_chars`` long."""
    if not isinstance(name, str):
        return "must be a string"
    if not name or not name.strip():
        return "must not be empty"
    if name != name.strip():
        return "must not start or end with whitespace"
    if len(name) > max_chars:
        return f"must be at most {max_chars} characters"
    if not name.isprintable():
        return "must not contain control characters"
    return None


def encode_scope(tenant: str, sub_scopes: Sequence[str] = ()) -> str:
    """The engine's scope for ``tenant`` narrowed by ``sub_scopes``: a compact JSON list (injective).

    Raises ``ValueError`` when the result exceeds the engine's 256-character scope limit."""
    encoded = json.dumps([tenant, *sub_scopes], ensure_ascii=False, separators=(",", ":"))
    if len(encoded) > _MAX_SCOPE_CHARS:
        raise ValueError(f"scope too long ({len(encoded)} > {_MAX_SCOPE_CHARS} characters encoded)")
    return encoded


def decode_scope(scope: str) -> tuple[str, list[str]] | None:
    """``(tenant, sub_scopes)`` of a scope made by :func:`encode_scope`; None for any other string."""
    try:
        parts = json.loads(scope)
    except (TypeError, ValueError):
        return None
    if not isinstance(parts, list) or not parts or not all(isinstance(p, str) for p in parts):
        return None
    return parts[0], parts[1:]


class KeyRing:
    """API keys and their policies, compared in constant time.

    Keys are kept as SHA-256 digests; :meth:`authenticate` compares the presented key's digest
    with *every* stored digest (``secrets.compare_digest``), so neither the time taken nor an
    early exit tells which key, or how much of one, matched.
    """

    def __init__(self, policies: Mapping[str, TenantPolicy]) -> None:
        self._entries = [(hashlib.sha256(k.encode()).digest(), p) for k, p in policies.items() if k]

    @classmethod
    def build(cls, api_keys: Iterable[str] = (), tenant_keys: Mapping[str, TenantPolicy] | None = None) -> KeyRing:
        """Plain keys (tenant :data:`DEFAULT_TENANT`) and tenant keys; a key in both is a mistake."""
        policies = {k: TenantPolicy(DEFAULT_TENANT) for k in api_keys if k}
        for key, policy in (tenant_keys or {}).items():
            if key in policies:
                raise ValueError("a key is given both with --api-key and in the tenant file")
            policies[key] = policy
        return cls(policies)

    def __bool__(self) -> bool:
        return bool(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def authenticate(self, key: str) -> TenantPolicy | None:
        """The policy of ``key``, or None."""
        digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()
        found: TenantPolicy | None = None
        for stored, policy in self._entries:
            if secrets.compare_digest(digest, stored):
                found = policy
        return found


def load_tenant_keys(path: Path) -> dict[str, TenantPolicy]:
    """Read a ``--tenant-keys`` file: a JSON object, API key -> tenant name or policy object."""
    try:
        data = json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not JSON ({exc})") from exc
    if not isinstance(data, dict) or not data:
        raise ValueError(f"{path}: expected a non-empty JSON object mapping API keys to tenants")
    policies = {}
    for i, (key, value) in enumerate(data.items()):
        name = f"{path}: entry {i + 1}"  # never the key itself: it is a secret
        if not key or key != key.strip():
            raise ValueError(f"{name}: an API key must be non-empty, without surrounding whitespace")
        policies[key] = TenantPolicy.from_json(name, value)
    return policies
