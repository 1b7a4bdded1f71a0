"""enhanced-llm: a drop-in vLLM ``AsyncLLM`` with exact and semantic response caching,
asynchronous NLP analysis and similarity search.

The public API is re-exported here. Names are resolved lazily (PEP 562), so
``import enhanced_llm.config`` stays light and vLLM is imported only when an
engine-side name is first used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    # engine and outputs
    "EnhancedAsyncLLM": "engine",
    "RequestOptions": "engine",
    "EnhancedRequestOutputCollector": "collector",
    "EnhancedOutput": "collector",
    "OutputMetadata": "metadata",
    # configuration
    "CacheType": "config",
    "EngineArgsConfig": "config",
    "VLLMConfig": "config",
    "CacheConfig": "config",
    "SimilarityConfig": "config",
    "FeatureFlags": "config",
    "NLPConfig": "config",
    "HandlerConfig": "config",
    # handler and factory
    "EnhancedVLLMHandler": "handler",
    "create_enhanced_system": "factory",
    "get_global_factory": "factory",
    "EnhancedLLMFactory": "factory",
    # caching
    "TieredCache": "cache.tiered",
    "CacheEntry": "cache.entry",
    # embedded models
    "build_model": "models",
    # errors
    "EnhancedLLMError": "errors",
    "ConfigurationError": "errors",
    "MissingDependencyError": "errors",
    "CacheError": "errors",
    "CacheBackendError": "errors",
    "CorruptEntryError": "errors",
    "EmbeddingError": "errors",
    "NLPError": "errors",
    "HandlerError": "errors",
    "HandlerNotStartedError": "errors",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'enhanced_llm' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs
    from .cache.entry import CacheEntry
    from .cache.tiered import TieredCache
    from .collector import EnhancedOutput, EnhancedRequestOutputCollector
    from .config import (
        CacheConfig, CacheType, EngineArgsConfig, FeatureFlags, HandlerConfig, NLPConfig, SimilarityConfig, VLLMConfig,
    )
    from .engine import EnhancedAsyncLLM, RequestOptions
    from .factory import EnhancedLLMFactory, create_enhanced_system, get_global_factory
    from .handler import EnhancedVLLMHandler
    from .errors import (
        CacheBackendError, CacheError, ConfigurationError, CorruptEntryError, EmbeddingError, EnhancedLLMError,
        HandlerError, HandlerNotStartedError, MissingDependencyError, NLPError,
    )
    from .metadata import OutputMetadata
    from .models import build_model
