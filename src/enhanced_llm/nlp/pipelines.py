"""The spaCy pipelines, loaded once, lazily, and shared by every analyzer (each used under its own lock).

Keys: ``en-trained`` (a trained English pipeline, None when none is installed),
``en-rules`` (blank English + rules) and ``zh`` (blank Chinese with jieba). The loaders
live with their language's rules (:mod:`.en`, :mod:`.zh`).
"""

from __future__ import annotations

import logging
import threading

from ..errors import MissingDependencyError, NLPError
from . import en, zh
from .common import Pipeline

__all__ = ["get_pipeline", "pipeline_status"]

log = logging.getLogger(__name__)


_PIPELINES: dict[str, Pipeline | None] = {}
_LOAD_ERRORS: dict[str, str] = {}
_LOAD_LOCK = threading.Lock()
_LOADERS = {"en-trained": en.load_trained, "en-rules": en.load_rules, "zh": zh.load}


def get_pipeline(key: str) -> Pipeline | None:
    """The shared pipeline ``key`` (loaded on first use); None if a trained one is absent.

    Raises MissingDependencyError when spaCy/jieba are missing; other load failures are
    remembered (see :func:`pipeline_status`) and re-raised as :class:`NLPError`.
    """
    if key in _PIPELINES:
        return _PIPELINES[key]
    with _LOAD_LOCK:
        if key not in _PIPELINES:
            try:
                _PIPELINES[key] = _LOADERS[key]()
                _LOAD_ERRORS.pop(key, None)
            except MissingDependencyError as exc:
                _LOAD_ERRORS[key] = str(exc)
                raise
            except Exception as exc:  # noqa: BLE001 - a broken model must not break requests
                _LOAD_ERRORS[key] = f"{type(exc).__name__}: {exc}"
                _PIPELINES[key] = None
                if key != "en-trained":
                    del _PIPELINES[key]
                    raise NLPError(f"loading NLP pipeline {key} failed: {exc}") from exc
                log.warning("trained English pipeline failed to load, using rules: %s", exc)
    return _PIPELINES[key]


def pipeline_status() -> dict[str, str]:
    """Which pipelines are loaded: key -> name, "absent" or "error: ..."."""
    out = {}
    for key in _LOADERS:
        if key in _LOAD_ERRORS:
            out[key] = f"error: {_LOAD_ERRORS[key]}"
        elif key in _PIPELINES:
            pipe = _PIPELINES[key]
            out[key] = pipe.name if pipe else "absent"
        else:
            out[key] = "not loaded"
    return out
