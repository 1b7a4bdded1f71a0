"""CY-LLM's frozen engine interface (seed 000): ``BaseEngine``."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Generator
from typing import Any

__all__ = ["BaseEngine"]


class BaseEngine(ABC):
    """What every CY-LLM engine implements; CY-LLM's worker only ever calls these four methods.

    * ``load_model(model_path, adapter_path=None, **kwargs)`` loads the model (and an
      optional LoRA adapter used by every later ``infer`` call that names none);
    * ``infer(prompt, **kwargs)`` is a generator of text chunks (``str`` only);
    * ``unload_model()`` frees the model and everything it holds;
    * ``get_memory_usage()`` reports memory figures as ``{name: float}``.
    """

    @abstractmethod
    def load_model(self, model_path: str, adapter_path: str | None = None, **kwargs: Any) -> None:
        """Load ``model_path`` (and ``adapter_path``, a LoRA adapter); engine arguments as keywords."""

    @abstractmethod
    def infer(self, prompt: str, **kwargs: Any) -> Generator[str, None, None]:
        """Yield the answer to ``prompt`` as text chunks while it is generated."""

    @abstractmethod
    def unload_model(self) -> None:
        """Free the model, its processes and its memory (idempotent)."""

    @abstractmethod
    def get_memory_usage(self) -> dict[str, float]:
        """Memory figures of the loaded engine (bytes unless the name says otherwise)."""
