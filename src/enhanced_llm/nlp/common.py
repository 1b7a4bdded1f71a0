"""What every language of the analyzer shares: clean text, script detection, digit numbers,
the pipeline record, spaCy's import and the rule that joins context sentences to a question.

The per-language rules live in :mod:`.en` and :mod:`.zh`; nothing here imports spaCy
at module level.
"""

from __future__ import annotations

import re
import threading
import unicodedata
from dataclasses import dataclass, field
from typing import Any

from ..errors import MissingDependencyError
from .result import Language

__all__ = ["sanitise", "is_han", "detect_language", "digit_numbers", "Pipeline", "import_spacy", "merge_context"]


_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b-\u200f\u2028\u2029\ufeff]")


def sanitise(text: object) -> str:
    """A clean ``str`` of the same length: lone surrogates -> '?', control characters -> ' '."""
    if text is None:
        return ""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    elif not isinstance(text, str):
        text = str(text)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = "".join("?" if 0xD800 <= ord(c) <= 0xDFFF else c for c in text)
    return _CONTROL_RE.sub(" ", text)


def is_han(c: str) -> bool:
    """Is ``c`` a Han (CJK unified ideograph) character?"""
    o = ord(c)
    return 0x4E00 <= o <= 0x9FFF or 0x3400 <= o <= 0x4DBF or 0xF900 <= o <= 0xFAFF or 0x20000 <= o <= 0x2FA1F


def detect_language(text: str) -> Language:
    """Script-ratio guess: "en" (Latin), "zh" (Han), "mixed", "other" or "empty".

    A Han character counts three times a Latin letter (one Chinese word is ~1.5 characters,
    one English word ~5 letters), so "请比较Python和Java的性能" is Chinese.
    """
    if not text.strip():
        return "empty"
    han = latin = other = 0
    for c in text:
        if c.isascii():
            latin += c.isalpha()
        elif is_han(c):
            han += 3
        elif c.isalpha():
            if "LATIN" in _char_name(c):
                latin += 1
            else:
                other += 1
    total = han + latin + other
    if total == 0:
        return "other"
    if han / total >= 0.6:
        return "zh"
    if latin / total >= 0.6:
        return "en"
    if han / total >= 0.2 and latin / total >= 0.2 and other / total < 0.2:
        return "mixed"
    return "other" if other / total >= 0.5 else "mixed"


def _char_name(c: str) -> str:
    return unicodedata.name(c, "")


# --------------------------------------------------------------------------- numbers

_FULLWIDTH = str.maketrans("０１２３４５６７８９．", "0123456789.")
_DIGITS_RE = re.compile(r"(?<![\w.])[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?(?![\d])|[-+]?\d+(?:\.\d+)?")


def digit_numbers(text: str) -> list[tuple[int, str]]:
    """Numbers written in digits (also full-width), as (offset, normalised value): "1,000" -> "1000"."""
    out = []
    for m in _DIGITS_RE.finditer(text.translate(_FULLWIDTH)):
        s = m.group().replace(",", "").lstrip("+")
        if "." in s:
            s = s.rstrip("0").rstrip(".")
        out.append((m.start(), s))
    return out


# --------------------------------------------------------------------------- pipelines


@dataclass
class Pipeline:
    """A loaded spaCy pipeline and what goes with it."""

    name: str
    nlp: Any
    parsed: bool = False  #: has tagger + parser (+ ner)
    matcher: Any = None  #: English connective Matcher
    lock: threading.Lock = field(default_factory=threading.Lock)


def import_spacy() -> Any:
    """The ``spacy`` module, or MissingDependencyError naming the extra to install."""
    try:
        import spacy
    except ImportError as exc:
        raise MissingDependencyError("spacy", "NLP analysis", "nlp") from exc
    return spacy


# --------------------------------------------------------------------------- clauses


def merge_context(pieces: list[tuple[int, int, bool]], is_request: Any) -> list[tuple[int, int]]:
    """Join each unsplit statement sentence to the next piece, or to the previous at the end.

    Pieces are (start, end, whole_sentence); parts of a split sentence were checked already.
    """
    out: list[tuple[int, int]] = []
    pending: int | None = None
    for a, b, whole in pieces:
        if pending is not None:
            a, pending = pending, None
        if not whole or is_request((a, b)):
            out.append((a, b))
        else:
            pending = a
    if pending is not None:
        if out:
            out[-1] = (out[-1][0], pieces[-1][1])
        else:
            out.append((pending, pieces[-1][1]))
    return out
