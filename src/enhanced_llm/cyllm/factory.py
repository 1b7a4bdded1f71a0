"""CY-LLM's engine factory (seed 000): engine types by name, old names kept as aliases."""

from __future__ import annotations

import os
from typing import Any, ClassVar

from .base import BaseEngine
from .engines import EnhancedVllmAsyncEngine, VllmAsyncEngine

__all__ = ["EngineFactory", "create_engine", "DEFAULT_ENGINE_TYPE", "ENGINE_ALIASES", "ENV_ENGINE_TYPE"]

#: The engine type used when none is named: vLLM with the response caches.
DEFAULT_ENGINE_TYPE = "enhanced-vllm-async"

#: CY-LLM's environment variable naming the engine type (``export CY_LLM_ENGINE=cuda-vllm`` rolls back).
ENV_ENGINE_TYPE = "CY_LLM_ENGINE"

#: CY-LLM's names -> ours. ``cuda-vllm-async`` was CY-LLM's new default and is now the enhanced
#: engine; ``cuda-vllm``, its fallback to the previous engine, is plain vLLM (no caches).
ENGINE_ALIASES: dict[str, str] = {
    "cuda-vllm-async": "enhanced-vllm-async",
    "cuda-vllm": "vllm-async",
}


class EngineFactory:
    """``EngineFactory.create(engine_type, *args, **kwargs) -> BaseEngine``."""

    _registry: ClassVar[dict[str, type[BaseEngine]]] = {
        "enhanced-vllm-async": EnhancedVllmAsyncEngine,
        "vllm-async": VllmAsyncEngine,
    }

    @staticmethod
    def create(engine_type: str | None = None, *args: Any, **kwargs: Any) -> BaseEngine:
        """A new engine of ``engine_type`` (None or ``""``: ``$CY_LLM_ENGINE``, else the default).

        Raises ``ValueError`` naming the known types for an unknown one.
        """
        return EngineFactory.resolve(engine_type)(*args, **kwargs)

    @staticmethod
    def resolve(engine_type: str | None) -> type[BaseEngine]:
        """The engine class for a type name or alias."""
        name = (engine_type or os.environ.get(ENV_ENGINE_TYPE) or DEFAULT_ENGINE_TYPE).strip().lower()
        name = ENGINE_ALIASES.get(name, name)
        try:
            return EngineFactory._registry[name]
        except KeyError:
            raise ValueError(
                f"unknown engine type {engine_type!r}; known types: {', '.join(EngineFactory.available())}"
            ) from None

    @staticmethod
    def register(engine_type: str, engine_class: type[BaseEngine]) -> None:
        """Add an engine type (a ``BaseEngine`` subclass)."""
        if not (isinstance(engine_class, type) and issubclass(engine_class, BaseEngine)):
            raise TypeError("engine_class must be a BaseEngine subclass")
        EngineFactory._registry[engine_type.strip().lower()] = engine_class

    @staticmethod
    def available() -> list[str]:
        """Every accepted type name: the engine types, then the aliases."""
        return [*EngineFactory._registry, *(a for a in ENGINE_ALIASES if a not in EngineFactory._registry)]


def create_engine(engine_type: str | None = None, **kwargs: Any) -> BaseEngine:
    """``create_engine(engine_type, **kwargs)``: :meth:`EngineFactory.create` with keywords only."""
    return EngineFactory.create(engine_type, **kwargs)
