"""One exception tree for enhanced-llm, rooted at :class:`EnhancedLLMError`.

Request-path errors that vLLM already defines (``VLLMValidationError``,
``EngineDeadError``, ``ValueError`` for bad prompts ...) are raised unchanged,
so code written against ``AsyncLLM`` keeps catching what it caught before.
The classes below cover what is ours: configuration, optional dependencies,
and the internal failures of caches, embeddings and NLP. The latter never
escape into a request: the engine catches them, counts them and fails open.
"""

from __future__ import annotations

__all__ = [
    "EnhancedLLMError",
    "ConfigurationError",
    "MissingDependencyError",
    "CacheError",
    "CacheBackendError",
    "CorruptEntryError",
    "EmbeddingError",
    "NLPError",
    "HandlerError",
    "HandlerNotStartedError",
]


class EnhancedLLMError(Exception):
    """Base class of every exception raised by enhanced-llm itself."""


class ConfigurationError(EnhancedLLMError, ValueError):
    """A configuration value is invalid or inconsistent."""


class MissingDependencyError(EnhancedLLMError, ImportError):
    """An optional dependency is needed for a feature that was switched on."""

    def __init__(self, package: str, feature: str, extra: str | None = None) -> None:
        hint = f"pip install 'enhanced-llm[{extra}]'" if extra else f"pip install {package}"
        super().__init__(f"{feature} needs the package {package!r}: {hint}")
        self.package = package
        self.feature = feature


class CacheError(EnhancedLLMError):
    """A cache level failed. Caught inside the engine; a request never sees it."""


class CacheBackendError(CacheError):
    """The remote cache level (Redis) timed out or could not be reached."""


class CorruptEntryError(CacheError):
    """A stored cache value could not be decoded (corrupt, foreign or old)."""


class EmbeddingError(EnhancedLLMError):
    """Computing an embedding failed. Caught inside the engine."""


class NLPError(EnhancedLLMError):
    """NLP analysis failed or timed out. Reported in metadata, never raised into a request."""


class HandlerError(EnhancedLLMError):
    """Misuse of :class:`~enhanced_llm.handler.EnhancedVLLMHandler`."""


class HandlerNotStartedError(HandlerError, RuntimeError):
    """A request reached a handler that is not started (or already stopped)."""
