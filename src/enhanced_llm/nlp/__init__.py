"""NLP analysis of prompts: language, connectives, sub-questions, entities, numbers, negations.

Needs the ``nlp`` extra (spaCy + jieba); the trained English pipeline (``nlp-trained``) is optional.
Nothing here imports vLLM.
"""

from .analyzer import (
    TRAINED_PIPELINES,
    AsyncNLPAnalyzer,
    NLPAnalyzer,
    analyze,
    detect_language,
    pipeline_status,
)
from .result import Clause, Connective, ConnectiveFunction, Entity, Language, NLPResult

__all__ = [
    "analyze",
    "detect_language",
    "pipeline_status",
    "NLPAnalyzer",
    "AsyncNLPAnalyzer",
    "NLPResult",
    "Clause",
    "Connective",
    "Entity",
    "Language",
    "ConnectiveFunction",
    "TRAINED_PIPELINES",
]
