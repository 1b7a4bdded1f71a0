"""What ``enhanced-llm serve`` adds to ``vllm serve``: the enhancement configs and the HTTP mapping."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config import CacheConfig, HandlerConfig, SimilarityConfig
from .tenants import TenantPolicy


@dataclass
class ServingOptions:
    """What the server adds to ``vllm serve``: the enhancement configs and the HTTP mapping."""

    cache_config: CacheConfig = field(default_factory=CacheConfig)
    similarity_config: SimilarityConfig = field(default_factory=SimilarityConfig)
    handler_config: HandlerConfig = field(default_factory=HandlerConfig)
    scope_header: str = "X-Cache-Scope"
    cache_response_headers: bool = True
    grpc_port: int | None = None
    """Serve CY-LLM's gRPC ``AIService.StreamPredict`` on this port too (None: no gRPC)."""
    tenant_keys: dict[str, TenantPolicy] | None = None
    """``--tenant-keys``: API key -> policy (tenant); see :mod:`.tenants`."""
    trust_scope_header: bool = False
    """``--trust-scope-header``: the scope header names the tenant (a gateway in front sets it)."""
    protect_metrics: bool = False
    """``--protect-metrics``: ``/metrics``, ``/load``, ``/version`` and the API docs need a key too."""
