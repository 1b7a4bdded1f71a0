"""One text, read once: the facts every verifier rule compares (cached, bounded in bytes).

:func:`analyze` tokenizes a text, reads its English part with :mod:`.en` and its
Chinese part with :mod:`.zh`, and returns an :class:`Analysis`. Results are kept
in an LRU bounded by the bytes of the texts it holds (``ANALYSIS_CACHE_BYTES``,
6 MiB by default), so a cache of prompts does not grow with their length. The
verifier's bound (:func:`set_cache_bytes`) is shared: three quarters for this
cache, one quarter for the word-level caches of :mod:`.memo`.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass

from cachetools import LRUCache

from enhanced_llm.semantic.verifier import en, en_rules, memo, zh_rules
from enhanced_llm.semantic.verifier.zh import CJK_RE, ZhFacts, to_simplified, zh_facts

__all__ = ["Analysis", "analyze", "cache_usage", "covered", "set_cache_bytes"]

ANALYSIS_CACHE_BYTES = 6 << 20
_ENTRY_COST = 4  # an analysis holds several views of its text: about four times its size, plus ~1 KB
_ENTRY_OVERHEAD = 1024


@dataclass(frozen=True, slots=True)
class Analysis:
    """Per-text facts the rules compare."""

    text: str
    norm: str
    words: tuple[str, ...]  # lower-cased non-Chinese tokens, in order
    word_set: frozenset[str]
    numbers: tuple[str, ...]  # sorted canonical numbers (digits, English number words, Chinese numerals)
    weak_numbers: frozenset[str]  # counts said in a way that may be a pronoun or article (Chinese lone 一)
    ordinals: frozenset[int]  # positions named ("second", "3rd", 第二)
    units: frozenset[str]  # units that follow a number ("3 weeks" -> "week", "五公斤" -> "公斤")
    digit_numbers: bool  # some number is written with digits or Chinese numerals, not only as an English word
    entities: frozenset[str]
    stems: tuple[str, ...]  # en.stem() of every word, in order
    stem_set: frozenset[str]
    content: frozenset[str]  # stems of the English content words (not stop words, not numbers)
    squashed: str  # lower-cased letters and digits only ("Hugging Face.js" -> "huggingfacejs")
    initialisms: frozenset[str]  # capitals of CamelCase tokens ("JavaScript" -> "js")
    neg_scopes: tuple[str | None, ...]  # per explicit negation cue: stem of the word it negates (None: unknown)
    implicit_neg: bool  # a word that negates by meaning ("absence", "avoid", "non-...")
    zh: ZhFacts | None  # the Chinese part, when there is one
    order: tuple[str, ...]  # tokens in text order for the role rule (English stems with "'s"; jieba's words)
    times: frozenset[str]  # relative dates and times of day ("day+1", "weekend0", "year-1", "night")
    periods: frozenset[str]  # quarters, halves and fractions ("Q1", "H2", "1/4")
    dims: frozenset[str]  # what a measure question asks for ("weight", "price", "duration", ...)
    quantities: frozenset[tuple[tuple[str, ...], str, float]]  # (numbers, kind, amount in base units): 半小时 = 30 minutes

    @property
    def negated(self) -> bool:
        return bool(self.neg_scopes) or self.implicit_neg or bool(self.zh and self.zh.negated)


_DIGIT_FRACTION_RE = re.compile(r"(?<![\d/])(\d)/(\d{1,2})(?![\d/])")

_cache: LRUCache[str, tuple[Analysis, int]] = LRUCache(maxsize=ANALYSIS_CACHE_BYTES, getsizeof=lambda item: item[1])
_lock = threading.Lock()


def set_cache_bytes(limit: int) -> None:
    """Bound the verifier's caches to ``limit`` bytes in all (drops what they hold): three quarters
    for analysed texts, a quarter for the word-level caches."""
    global _cache
    words = limit // 4
    memo.set_bytes(words)
    with _lock:
        _cache = LRUCache(maxsize=max(1, limit - words), getsizeof=lambda item: item[1])


def cache_usage() -> dict[str, int]:
    """What the verifier's caches hold; ``verifier_cache_bytes_bound`` is the bound of both together."""
    with _lock:
        usage = {"analysis_cache_bytes": int(_cache.currsize), "analysis_cache_entries": len(_cache),
                 "analysis_cache_bytes_bound": int(_cache.maxsize)}
    usage.update(memo.usage())
    usage["verifier_cache_bytes_bound"] = usage["analysis_cache_bytes_bound"] + usage["word_cache_bytes_bound"]
    return usage


def analyze(text: str) -> Analysis:
    """The facts of ``text`` (cached)."""
    with _lock:
        hit = _cache.get(text)
    if hit is not None:
        return hit[0]
    result = _analyze(text)
    size = _ENTRY_COST * len(text.encode("utf-8", "surrogatepass")) + _ENTRY_OVERHEAD
    if size <= _cache.maxsize // 8:
        with _lock:
            _cache[text] = (result, size)
    return result


def _analyze(text: str) -> Analysis:
    text = text.replace("\u2019", "'").replace("\u2018", "'")
    if CJK_RE.search(text):
        text = to_simplified(text)  # 電腦 and 电脑 are one word to every rule
    norm = " ".join(text.lower().split())
    raw_tokens = en._TOKEN_RE.findall(text)
    words: list[str] = []
    entities: set[str] = set()
    sentence_starts = {m.start(1) for m in en._SENT_START_RE.finditer(text)}
    pos = 0
    for tok in raw_tokens:
        start = text.find(tok, pos)
        pos = start + len(tok) if start >= 0 else pos
        if CJK_RE.match(tok):
            continue
        low = tok.strip("`").lower().strip(".'-")
        if low.endswith("'s"):
            low = low[:-2]
        words.append(low)
        if tok.startswith("`") or en._is_entity_token(tok, at_start=start in sentence_starts):
            entities.add(low)
    num_text = en._ENUMERATOR_RE.sub(" ", en._VERSION_V_RE.sub("", text))
    numbers = [en._canon_number(m.group()) for m in en._NUM_RE.finditer(num_text)]
    digit_numbers = bool(numbers)
    for i, w in enumerate(words):
        if "-" in w and w not in en._EN_NUMBER_WORDS:  # "thirty-five", "ten-year-old"
            value = _hyphen_number(w)
            if value is not None:
                pct = i + 1 < len(words) and words[i + 1] in ("percent", "per cent")
                numbers.append(f"{value:g}" + ("%" if pct else ""))
            continue
        if w in en._EN_NUMBER_WORDS and w not in en._EN_WEAK_NUMBER_WORDS:
            if i + 1 < len(words) and words[i + 1] == "percent":
                numbers.append(f"{en._EN_NUMBER_WORDS[w]:g}%")
                continue
            # "several thousand", "hundreds": a magnitude word alone is a vague amount, not a number.
            if w in en._EN_MAGNITUDES and not (i and (words[i - 1] in en._EN_NUMBER_WORDS or words[i - 1][:1].isdigit())):
                continue
            numbers.append(f"{en._EN_NUMBER_WORDS[w]:g}")
    stems = tuple(en._stem(w) for w in words)
    ordinals, units = en._ordinals(words), en._units(words, stems)
    if any(w == "one" and i + 1 < len(words) and (stems[i + 1] in en._UNIT_STEMS or _counted_noun(words, i + 1))
           for i, w in enumerate(words)):
        numbers.append("1")  # "one day", "one cup" is a quantity even though "one" alone is usually a pronoun
    for m in _DIGIT_FRACTION_RE.finditer(text):  # "1/3 cup" is the fraction "a third", not the numbers 1 and 3
        for part in m.groups():
            if part in numbers:
                numbers.remove(part)
        numbers.append(_fraction_value(f"{m.group(1)}/{m.group(2)}"))
    zh_text = zh_rules.mask_fractions(text) if "分之" in text else text
    zh = zh_facts(zh_text)
    times, periods = en_rules.relative_times(tuple(words)), en_rules.periods(tuple(words))
    dims, quantities = en_rules.dimensions(tuple(words), stems), en_rules.quantities(tuple(words), stems)
    order = en_rules.order_tokens(text)
    weak: frozenset[str] = frozenset()
    if zh is not None:
        numbers += zh.numbers
        digit_numbers = digit_numbers or bool(zh.numbers)
        ordinals |= zh.ordinals
        units |= zh.units
        weak = zh.weak_numbers
        entities |= {e.lower() for e in zh.entities}
        times |= zh_rules.relative_times(text)
        periods |= zh_rules.periods(text)
        dims |= zh_rules.dimensions(text)
        quantities |= zh_rules.quantities(text)
        order = zh_rules.order_tokens(zh.words)

    numbers += [_fraction_value(p) for p in periods if "/" in p]  # "a third" = "1/3" = 三分之一
    entities -= {n for n in entities if en._NUM_RE.fullmatch(n)}
    neg_scopes, implicit_neg = en._negation_scopes(text, words, stems)
    initialisms = set()
    for tok in raw_tokens:
        caps = "".join(ch for ch in tok if ch.isupper())
        if len(caps) >= 2 and not tok.isupper():
            initialisms.add(caps.lower())
    return Analysis(
        text=text,
        norm=norm,
        words=tuple(words),
        word_set=frozenset(words),
        numbers=tuple(sorted(numbers)),
        weak_numbers=weak,
        ordinals=ordinals,
        units=units,
        digit_numbers=digit_numbers,
        entities=frozenset(entities),
        stems=stems,
        stem_set=frozenset(stems),
        content=frozenset(
            st for w, st in zip(words, stems)
            if w not in en._STOP and not w[:1].isdigit() and w not in en._EN_NUMBER_WORDS and not w.endswith("n't")
        ),
        squashed=re.sub(r"[^0-9a-z]+", "", norm),
        initialisms=frozenset(initialisms),
        neg_scopes=neg_scopes,
        implicit_neg=implicit_neg,
        zh=zh,
        order=order,
        times=times,
        periods=periods,
        dims=dims,
        quantities=quantities,
    )


def _fraction_value(frac: str) -> str:
    """"1/3" as the numbers rule writes a number ("0.333333"): the same as "a third" or "三分之一"."""
    a, b = frac.split("/")
    return f"{float(a) / float(b):g}" if float(b) else frac


def _hyphen_number(word: str) -> float | None:
    """The number a hyphenated word spells ("thirty-five" = 35) or starts with ("ten-year-old" = 10)."""
    parts = word.split("-")
    vals = [en._EN_NUMBER_WORDS.get(p) for p in parts]
    if vals[0] is None or parts[0] in en._EN_WEAK_NUMBER_WORDS:
        return None
    if len(vals) >= 2 and vals[1] is not None and vals[0] >= 20 and vals[1] < 10:
        return float(vals[0] + vals[1])
    return float(vals[0])


def _counted_noun(words: list[str], i: int) -> bool:
    """Is ``words[i]`` a noun a preceding "one" counts ("one cup", not "one of", "which one is")?"""
    w = words[i]
    return (w.isalpha() and w not in en._STOP and w not in en._EN_NEG and not w.endswith("n't")
            and w not in en._EN_ORDINALS and not w.startswith(("half", "quarter", "third")))


def covered(word: str, other: Analysis) -> bool:
    """Does ``other`` mention ``word`` (any casing, plural/possessive, inside an identifier, as an acronym)?"""
    if word in other.word_set or word in other.norm:
        return True
    if 2 <= len(word) <= 6 and word.isalpha():  # "ml" for "machine learning"
        initials = "".join(w[0] for w in other.words if w)
        if word in initials and any(
            "".join(w[0] for w in other.words[i : i + len(word)]) == word for i in range(len(other.words))
        ):
            return True
    if word in other.initialisms:  # "js" for "JavaScript"
        return True
    squashed = re.sub(r"[^0-9a-z]+", "", word)
    if len(squashed) >= 3 and squashed in other.squashed:  # "Hugging Face.js" / "Huggingface.js"
        return True
    stem = en._stem(word)
    return len(stem) >= 3 and (stem in other.stem_set or stem in other.norm)
