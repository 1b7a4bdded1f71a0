"""Chinese rules: connectives, clause splitting, entities, negations and Chinese numerals.

The pipeline (``zh-jieba``) is ``spacy.blank("zh")`` with the jieba segmenter; entities come
from ``jieba.posseg`` (nr PERSON, ns GPE, nt ORG, nz/eng MISC). spaCy and jieba are imported
when it is loaded (MissingDependencyError names the extra to install). How a question is
split is described in :mod:`.analyzer`.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from ..errors import MissingDependencyError
from . import lexicon as lx
from .common import Pipeline, digit_numbers, import_spacy, merge_context
from .result import Clause, Connective, Entity

__all__ = ["load", "analyze", "numerals"]


# --------------------------------------------------------------------------- loading


def load() -> Pipeline:
    """Blank Chinese segmented by jieba (``zh-jieba``), with jieba's POS dictionary loaded."""
    spacy = import_spacy()
    try:
        import jieba
        import jieba.posseg  # noqa: F401  (entities)
    except ImportError as exc:
        raise MissingDependencyError("jieba", "Chinese NLP analysis", "nlp") from exc
    jieba.setLogLevel(logging.WARNING)
    nlp = spacy.blank("zh", config={"nlp": {"tokenizer": {"segmenter": "jieba"}}})
    jieba.initialize()
    jieba.posseg.lcut("初始化")  # loads the POS dictionary now, not on the first request
    return Pipeline(name="zh-jieba", nlp=nlp)


# --------------------------------------------------------------------------- clauses

_SENT_RE = re.compile(r"[^。？！?!；;\n]+[。？！?!；;\n]*|[。？！?!；;\n]+")
_PIECE_RE = re.compile(r"[^，,]+[，,]*|[，,]+")
_QUESTION_RE = re.compile(
    "|".join(w for w in lx.ZH_QUESTION_WORDS if w not in ("几", "么")) + r"|几(?!乎)|么[？?。\s]*$"
)
_TRAIL = "，,；; \t\r\n"
_POS_LABELS = {"nr": "PERSON", "ns": "GPE", "nt": "ORG", "nz": "MISC", "eng": "MISC"}


def _is_request(s: str) -> bool:
    s = s.strip()
    return bool(_QUESTION_RE.search(s)) or s.startswith(lx.ZH_IMPERATIVES) or s.endswith(("？", "?"))


def _strip_lead(text: str, a: int, b: int) -> int:
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


def _clause_ranges(text: str) -> list[tuple[int, int]]:
    pieces: list[tuple[int, int, bool]] = []
    for sm in _SENT_RE.finditer(text):
        parts: list[tuple[int, int]] = []
        cur: list[int] | None = None
        subordinate = False
        for pm in _PIECE_RE.finditer(text, sm.start(), sm.end()):
            pa, pb = pm.span()
            if cur is None:
                cur, subordinate = [pa, pb], text[pa:pb].strip().startswith(lx.ZH_SUBORDINATORS)
                continue
            head = text[_strip_lead(text, cur[0], cur[1]):cur[1]].strip(_TRAIL)
            nxt_start = _strip_lead(text, pa, pb)
            nxt = text[nxt_start:pb].strip(_TRAIL)
            linked = nxt_start > pa and text[pa:nxt_start].strip(_TRAIL) != ""
            split = (
                head != ""
                and nxt != ""
                and not subordinate
                and not text[pa:pb].strip().startswith(lx.ZH_CONSEQUENTS)
                and _is_request(head)
                and (linked or _is_request(nxt))
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
    return merge_context(pieces, lambda p: _is_request(text[_strip_lead(text, *p):p[1]]))


def analyze(text: str, pipe: Pipeline) -> dict[str, Any]:
    """Connectives, clauses, entities, negations and numbers of Chinese ``text``."""
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
    for a, b in _clause_ranges(text):
        a = _strip_lead(text, a, b)
        while b > a and text[b - 1] in _TRAIL:
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
        label = _POS_LABELS.get(flag)
        if label and word.strip():
            entities.append(Entity(word, label, off, off + len(word)))
        off += len(word)
    numbers = sorted(digit_numbers(text) + numerals(text))
    return {"connectives": connectives, "clauses": clauses, "entities": entities,
            "negations": negations, "numbers": [n for _, n in numbers]}


# --------------------------------------------------------------------------- numbers


_NUM_RE = re.compile(r"[零〇一二两三四五六七八九十百千万亿]+")
_DIGIT = {"零": 0, "〇": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8, "九": 9}
_UNIT = {"十": 10, "百": 100, "千": 1000}
#: Words where a numeral character is not a number (一下 "a bit", 万一 "in case" ...).
_NUM_STOP = ("一下", "一些", "一起", "一样", "一直", "一定", "一般", "一切", "一旦", "一点", "唯一",
                "统一", "万一", "之一", "一边", "一会", "十分", "千万", "一致", "一同", "不一", "一向")


def _numeral(s: str) -> int | None:
    if all(c in _DIGIT for c in s):  # 二〇二四 -> 2024
        return int("".join(str(_DIGIT[c]) for c in s)) if len(s) > 1 else _DIGIT[s]
    total = section = num = 0
    for c in s:
        if c in _DIGIT:
            num = _DIGIT[c]
        elif c in _UNIT:
            section += (num or (1 if c == "十" else 0)) * _UNIT[c]
            num = 0
        elif c == "万":
            total += (section + num) * 10**4
            section = num = 0
        elif c == "亿":
            total = (total + section + num) * 10**8
            section = num = 0
    value = total + section + num
    return value or None


def numerals(text: str) -> list[tuple[int, str]]:
    """Numbers written in Chinese numerals, as (offset, value): 三百 -> "300"."""
    out = []
    for m in _NUM_RE.finditer(text):
        a = m.start()
        window = text[max(0, a - 1): m.end() + 1]
        if any(w in window for w in _NUM_STOP):
            continue
        value = _numeral(m.group())
        if value is not None:
            out.append((a, str(value)))
    return out
