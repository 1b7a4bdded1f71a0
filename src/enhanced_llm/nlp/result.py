"""The typed result of one analysis: :class:`NLPResult` and its parts.

Offsets (``start``/``end``) are Python string indices into the analysed text,
which is the original text up to ``max_chars`` (see ``truncated``), end exclusive.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

__all__ = ["Language", "ConnectiveFunction", "Connective", "Clause", "Entity", "NLPResult"]

Language = Literal["en", "zh", "mixed", "other", "empty"]
ConnectiveFunction = Literal["additive", "adversative", "causal", "conditional", "sequential", "alternative"]


class Connective(msgspec.Struct, frozen=True):
    """A discourse connective ("and", "then", "如果") and what it does."""

    text: str  #: the connective as written
    function: ConnectiveFunction  #: additive, adversative, causal, conditional, sequential or alternative
    start: int  #: offset of its first character
    end: int  #: offset after its last character


class Clause(msgspec.Struct, frozen=True):
    """One independent sub-question (or request) of the input, in order."""

    text: str  #: the exact substring ``text[start:end]``
    start: int  #: offset of its first character
    end: int  #: offset after its last character
    standalone: str | None = None  #: the clause with a shared head restored ("Can you ..."), if one was


class Entity(msgspec.Struct, frozen=True):
    """A named entity: from the trained pipeline (spaCy labels) or from heuristics."""

    text: str  #: the entity as written
    label: str  #: PERSON, ORG, GPE ... (trained / jieba POS) or MISC (capitalised span)
    start: int  #: offset of its first character
    end: int  #: offset after its last character


class NLPResult(msgspec.Struct, kw_only=True):
    """Everything one analysis found. Build metadata with :meth:`to_dict`."""

    language: Language = "empty"  #: en, zh, mixed, other or empty (script heuristic)
    connectives: list[Connective] = msgspec.field(default_factory=list)  #: in text order
    clauses: list[Clause] = msgspec.field(default_factory=list)  #: independent sub-questions, in order
    is_complex: bool = False  #: more than one clause
    entities: list[Entity] = msgspec.field(default_factory=list)  #: in text order
    numbers: list[str] = msgspec.field(default_factory=list)  #: normalised ("1,000" -> "1000", 三 -> "3")
    negations: list[str] = msgspec.field(default_factory=list)  #: negation words (not, n't, 不, 没有 ...)
    truncated: bool = False  #: the input was longer than max_chars; only its head was analysed
    pipeline: str = "none"  #: what analysed it: en_core_web_sm..., en-rules, zh-jieba, sentences, none
    elapsed_ms: float = 0.0  #: wall time of the analysis
    error: str | None = None  #: why the analysis failed or was given up; None when it succeeded

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (plain lists, dicts, str, int, float, bool, None)."""
        return msgspec.to_builtins(self)
