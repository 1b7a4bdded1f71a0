"""Decide whether a cached question may answer a new one: the rules, in order, and their verdict.

Embeddings say two questions are *about* the same thing; they are poor at
saying the questions *ask* the same thing. "Convert Celsius to Fahrenheit"
and "convert Fahrenheit to Celsius" score ~0.99 cosine. :class:`Verifier`
runs cheap, general rules over both texts after the similarity threshold and
rejects the pair when one of them finds a difference that changes the answer.
The facts come from :mod:`.analysis` (English rules in :mod:`.en`, Chinese in :mod:`.zh`).

Rules, in order (each rejection has its own reason string):

``unrepresentable``  the embedding model sees mostly unknown tokens in either text.
``truncated``        either text is longer than the model reads.
``number_mismatch``  the numbers differ (digits, English number words, Chinese numerals
                     with 两 and 半; "3" == "three" == "三"). List markers and vague
                     magnitudes are not numbers; a count said on one side only in words
                     ("two steps" / "the steps", "一天" / "每天") is tolerated, digits never.
``ordinal_mismatch`` both texts name positions and they differ (second / third, 第一 / 第二).
``unit_mismatch``    both texts measure something and share no unit (days / weeks, 公斤 / 斤).
                     Amounts of time, mass or length both texts state must be equal in any unit
                     ("half an hour" / "an hour" differ; 半小时 / 30分钟, "a year" / "12 months" agree).
``date_mismatch``    relative dates and times of day must match (:mod:`.en_rules`, :mod:`.zh_rules`):
                     today / tomorrow / tonight, this / next / last week, 这周末 / 下周末, 今年 / 去年,
                     上午 / 下午; a date on one side only rejects unless it is the present (today,
                     this week, 这周三 / 周三).
``period_mismatch``  quarters, halves and fractions differ (Q1 / Q3, 上半年 / 下半年, quarter / half).
``measure_mismatch`` both texts ask a measure of different dimensions (how heavy / how much does it
                     cost, 多大 / 多远, how long does it take / how far).
``negation_mismatch`` one text negates what the other asserts (English cues with a scope;
                     Chinese 不 没 没有 别 未 非 无, not 别人 / 无锡 / 能不能).
``antonym``          one text uses a word whose opposite the other uses (tables, un-/dis-,
                     -ful/-less; Chinese words, or one opposite character in the same place).
``swapped_roles``    two content words trade places across a direction word ("X to Y",
                     "X than Y", A比B, 从A到B, 把A换成B), or around the same relation in any
                     language (:mod:`.roles`: "Does A cause B" / "Does B cause A", "A's B" / "B's A",
                     A的B / B的A, 狗咬猫 / 猫咬狗), or one word follows opposite prepositions (to / from,
                     给 / 向). Moved phrases, symmetric relations (and, or, 和) and the passive keep roles.
``entity_mismatch``  each text names something the other does not (proper nouns, acronyms,
                     identifiers, code spans; Chinese people, places, organisations by jieba POS).
``content_mismatch`` one word was swapped for another in an otherwise identical question
                     (the word sequences differ in one place; one content word on one side,
                     at most two on the other), and the
                     word has no positive evidence of meaning the same as one of
                     the other side: same stem, one word containing the other (猫 / 猫咪),
                     the synonym table, or word-level similarity from the same embedding
                     model (``word_similarity``). A differing word is evidence of a
                     different question unless shown otherwise.

:meth:`Verifier.same_question` (used by ``SemanticCache.choose``) says whether two stored
questions use the same content words, i.e. are one question stored twice.

Optional NLP results (anything with ``entities``, ``numbers`` and ``negations``) add to
what the rules extract. Typical cost: 20-100 µs per pair (per-text analysis is cached).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from enhanced_llm.semantic.verifier import en, en_rules, roles, zh_rules
from enhanced_llm.semantic.verifier.analysis import Analysis, analyze, covered as _covered
from enhanced_llm.semantic.verifier.evidence import _differing, cilin_available, content_difference
from enhanced_llm.semantic.verifier.evidence import words_to_embed as _words_to_embed
from enhanced_llm.semantic.verifier.synonyms import rival
from enhanced_llm.semantic.verifier.zh import warm_up as zh_warm_up
from enhanced_llm.semantic.verifier.zh import zh_antonym, zh_swapped, zh_text_antonym

__all__ = ["Verdict", "Verifier", "REASONS", "lexical_overlap", "differing_words", "words_to_embed"]

REASONS = (
    "identical",
    "ok",
    "unrepresentable",
    "truncated",
    "number_mismatch",
    "ordinal_mismatch",
    "unit_mismatch",
    "date_mismatch",
    "period_mismatch",
    "measure_mismatch",
    "negation_mismatch",
    "antonym",
    "swapped_roles",
    "entity_mismatch",
    "content_mismatch",
)


@dataclass(frozen=True, slots=True)
class Verdict:
    accepted: bool
    reason: str
    detail: str = ""

    def __bool__(self) -> bool:
        return self.accepted


#: ``word_similarity(a, b)``: cosine of two words under the embedding model, or None when unknown.
WordSimilarity = Callable[[str, str], "float | None"]


class Verifier:
    """Rule-based check that a cached question answers a new one.

    ``text_info`` (optional) maps a text to an object with ``coverage`` (share of tokens the
    embedding model knows) and ``truncated``. ``word_similarity`` (optional) gives the
    content-word rule word-level evidence from the embedding model; ``word_threshold`` is the
    cosine two words need to count as the same meaning. ``generalise=False`` turns the
    content-word rule off (the rules before it only).
    """

    def __init__(
        self,
        text_info: Callable[[str], Any] | None = None,
        *,
        min_coverage: float = 0.9,
        one_sided_entities: bool = False,
        word_similarity: WordSimilarity | None = None,
        word_threshold: float = 0.65,
        generalise: bool = True,
        content_scope: str = "slots",
    ) -> None:
        self.text_info = text_info
        self.min_coverage = min_coverage
        self.one_sided_entities = one_sided_entities
        self.word_similarity = word_similarity
        self.word_threshold = word_threshold
        self.generalise = generalise
        self.content_scope = content_scope

    def verify(
        self, query: str, candidate: str, query_nlp: Any = None, candidate_nlp: Any = None,
        *, word_similarity: WordSimilarity | None = None, word_threshold: float | None = None,
    ) -> Verdict:
        """Accept or reject ``candidate`` (a cached question) as an answer source for ``query``."""
        q, c = analyze(query), analyze(candidate)
        if q.norm == c.norm:
            return Verdict(True, "identical")
        if self.text_info is not None:
            for text in (query, candidate):
                info = self.text_info(text)
                if info.coverage < self.min_coverage:
                    return Verdict(False, "unrepresentable", f"coverage {info.coverage:.2f}")
                if getattr(info, "truncated", False):
                    return Verdict(False, "truncated")
        for rule in (_numbers, _ordinals, _units, _amounts, _dates, _periods, _measures):
            verdict = rule(q, c, query_nlp, candidate_nlp)
            if verdict is not None:
                return verdict
        neg = _negation_difference(q, c, query_nlp, candidate_nlp)
        if neg:
            return Verdict(False, "negation_mismatch", neg)
        pair = _antonym_pair(q, c)
        if pair:
            return Verdict(False, "antonym", f"{pair[0]} / {pair[1]}")
        if not _distance_only(q, c):  # how far is A from B = how far is B from A
            if en._en_swapped(q, c) or (q.zh is not None and c.zh is not None and zh_swapped(q.zh, c.zh)):
                return Verdict(False, "swapped_roles")
            swap = _order_swap(q, c)
            if swap:
                return Verdict(False, "swapped_roles", swap)
        ent = self._entity_difference(q, c, query_nlp, candidate_nlp)
        if ent:
            return Verdict(False, "entity_mismatch", ent)
        if self.generalise:
            similar = word_similarity or self.word_similarity
            match = content_difference(
                q, c, similar, self.word_threshold if word_threshold is None else word_threshold, scope=self.content_scope
            )
            if not match:
                return Verdict(False, "content_mismatch", match.describe())
        return Verdict(True, "ok")

    def warm_up(self) -> None:
        """Load what the rules read from disk (jieba's dictionary, OpenCC, Cilin) now, off the event
        loop, rather than on the first Chinese request. Missing optional packages are skipped."""
        try:
            zh_warm_up()
        except Exception:  # noqa: BLE001 - jieba missing: the Chinese rules fail at use, as before
            pass
        cilin_available()

    def same_question(self, a: str, b: str) -> bool:
        """Do two stored questions use the same content words (ignoring function words, inflection,
        order and casing)? Two such entries are one question stored twice: if both may answer a
        query, the cache holds two answers to it and should not pick one by a cosine difference."""
        x, y = analyze(a), analyze(b)
        return x.content == y.content and _zh_content(x) == _zh_content(y)

    def _entity_difference(self, q: Analysis, c: Analysis, q_nlp: Any, c_nlp: Any) -> str:
        eq = q.entities | _nlp_entities(q_nlp)
        ec = c.entities | _nlp_entities(c_nlp)
        only_q = {e for e in eq if not _covered(e, c)}
        only_c = {e for e in ec if not _covered(e, q)}
        if only_q and only_c or self.one_sided_entities and (only_q or only_c):
            return f"{sorted(only_q)} vs {sorted(only_c)}"
        return ""


# --- numbers, ordinals, units, dates -------------------------------------------------

def _numbers(q: Analysis, c: Analysis, q_nlp: Any, c_nlp: Any) -> Verdict | None:
    nq, nc = _merge_numbers(q.numbers, q_nlp), _merge_numbers(c.numbers, c_nlp)
    # A weak count (Chinese lone 一 before a measure word) counts only when the other side has numbers too.
    if q.weak_numbers and (nc or c.weak_numbers):
        nq = nq | q.weak_numbers
    if c.weak_numbers and (nq or q.weak_numbers):
        nc = nc | c.weak_numbers
    # "2nd" and "second" name the same position: an ordinal in digits matches one in words.
    same_position = {f"{o:g}" for o in q.ordinals & c.ordinals}
    nq, nc = nq - same_position, nc - same_position
    # 半小时 / 30分钟, "half an hour" / "30 minutes": the same amount in another unit.
    aq, ac = q.quantities, c.quantities
    nq = nq - {n for ns, k, v in aq if any(_same_amount(k, v, x) for x in ac) for n in ns}
    nc = nc - {n for ns, k, v in ac if any(_same_amount(k, v, x) for x in aq) for n in ns}
    if nq != nc and _numbers_matter(q, c, nq, nc):
        return Verdict(False, "number_mismatch", f"{sorted(nq)} vs {sorted(nc)}")
    return None


def _amounts(q: Analysis, c: Analysis, *_: Any) -> Verdict | None:
    """Amounts of one kind (time, mass, length) both texts state must be equal, whatever the words:
    "half an hour" / "an hour", "a day" / "two days" (a count in words alone is tolerated above)."""
    aq, ac = q.quantities, c.quantities
    for kind in {k for _, k, _ in aq} & {k for _, k, _ in ac}:
        vq, vc = {v for _, k, v in aq if k == kind}, {v for _, k, v in ac if k == kind}
        if not all(any(_close(v, u) for u in vc) for v in vq) or not all(any(_close(v, u) for u in vq) for v in vc):
            return Verdict(False, "number_mismatch", f"amounts {sorted(vq)} vs {sorted(vc)}")
    return None


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-6 * max(abs(a), abs(b))


def _same_amount(kind: str, value: float, other: tuple[str, str, float]) -> bool:
    return kind == other[1] and _close(value, other[2])


def _ordinals(q: Analysis, c: Analysis, *_: Any) -> Verdict | None:
    if q.ordinals and c.ordinals and q.ordinals != c.ordinals:
        return Verdict(False, "ordinal_mismatch", f"{sorted(q.ordinals)} vs {sorted(c.ordinals)}")
    return None


_UNIT_SAME = {"平米": "平方米", "千克": "公斤", "千米": "公里", "星期": "周", "平方千米": "平方公里"}


def _units(q: Analysis, c: Analysis, *_: Any) -> Verdict | None:
    uq, uc = {_UNIT_SAME.get(u, u) for u in q.units}, {_UNIT_SAME.get(u, u) for u in c.units}
    if uq and uc and not uq & uc:
        if q.quantities and all(any(_same_amount(k, v, x) for x in c.quantities) for _, k, v in q.quantities):
            return None  # the same amounts in other units (半年 / 六个月)
        return Verdict(False, "unit_mismatch", f"{sorted(q.units)} vs {sorted(c.units)}")
    return None


def _dates(q: Analysis, c: Analysis, *_: Any) -> Verdict | None:
    """Relative dates must match: both texts name them and they differ, or one text restricts the
    question to a time the other does not name (next week, last year, tonight). The present
    (today, this week, 今年, a bare 周末) is what a question means when it names no time."""
    dq, dc = {t for t in q.times if t[-1].isdigit()}, {t for t in c.times if t[-1].isdigit()}
    tq, tc = q.times - dq, c.times - dc  # times of day (night, morning) and bare spans (周末)
    tq, tc = tq - {"weekend"}, tc - {"weekend"}
    pq, pc = {t for t in dq if _present(t)}, {t for t in dc if _present(t)}
    differ = (
        dq - pq != dc - pc  # 今天 / 明天, next week / (no date)
        or pq and pc and pq != pc  # this year / this month ("this Wednesday" / "Wednesday" is one day)
        or tq != tc and (tq and tc or (dq | dc))  # 上午 / 下午; today / tonight (a day named, a time on one side)
    )
    if differ:
        return Verdict(False, "date_mismatch", f"{sorted(q.times)} vs {sorted(c.times)}")
    return None


def _present(t: str) -> bool:
    return en_rules.present(t) or zh_rules.present(t)


def _periods(q: Analysis, c: Analysis, *_: Any) -> Verdict | None:
    """Quarters, halves and fractions (Q1 / Q2, 上半年 / 下半年, a quarter / half a tank) must match."""
    if q.periods and c.periods and q.periods != c.periods:
        return Verdict(False, "period_mismatch", f"{sorted(q.periods)} vs {sorted(c.periods)}")
    return None


def _measures(q: Analysis, c: Analysis, *_: Any) -> Verdict | None:
    """Two measure questions that ask for different dimensions (how heavy / how much does it cost,
    多大 / 多远) are different questions about the same thing."""
    if q.dims and c.dims and not q.dims & c.dims:
        return Verdict(False, "measure_mismatch", f"{sorted(q.dims)} vs {sorted(c.dims)}")
    return None


_DISTANCE_WORDS = ("far", "distance", "远", "距离")


def _distance_only(q: Analysis, c: Analysis) -> bool:
    """Do both texts ask only for a distance (symmetric: A to B is B to A), not a time or a price?"""
    return q.dims == c.dims == {"length"} and all(any(w in a.norm for w in _DISTANCE_WORDS) for a in (q, c))


def _order_swap(q: Analysis, c: Analysis) -> str:
    """Two words that trade roles by word order (see :mod:`.roles`); "" when none do."""
    if (q.zh is None) != (c.zh is None):
        return ""
    if q.zh is not None and c.zh is not None:
        content = set(q.zh.content | c.zh.content | q.zh.entities | c.zh.entities)
        parts = {p for u in content for p in (zh_rules.split_word(u) or ())}  # 员工 of 员工工资
        content |= parts | {w for w in q.order + c.order if w.isascii() and w.isalnum()}
        pair = roles.swapped_pair(q.order, c.order, content, drop=zh_rules.ORDER_DROP, symmetric=zh_rules.ORDER_SYMMETRIC,
                                  passive=zh_rules.ORDER_PASSIVE, loose=zh_rules.ORDER_LOOSE)
        conflict = roles.role_conflict(q.order, c.order, content, zh_rules.ROLE_CONFLICTS, drop=zh_rules.ORDER_DROP)
    else:
        content = {t for t in q.order if t in q.content or t.startswith("=")} | {t for t in c.order if t in c.content or t.startswith("=")}
        pair = roles.swapped_pair(q.order, c.order, content, drop=en_rules.ORDER_DROP, symmetric=en_rules.ORDER_SYMMETRIC,
                                  passive=en_rules.ORDER_PASSIVE, directed=en_rules.ORDER_DIRECTED)
        conflict = roles.role_conflict(q.order, c.order, content, en_rules.ROLE_CONFLICTS, drop=en_rules.ORDER_DROP)
    if pair:
        return f"{pair[0]} / {pair[1]} in each other's place"
    if conflict:
        return f"{conflict[0]}: {conflict[1]} / {conflict[2]}"
    return ""


def _merge_numbers(numbers: tuple[str, ...], nlp: Any) -> frozenset[str]:
    out = set(numbers)
    for n in getattr(nlp, "numbers", None) or ():
        out.add(en._canon_number(str(n)))
    return frozenset(out)


def _numbers_matter(q: Analysis, c: Analysis, nq: frozenset[str], nc: frozenset[str]) -> bool:
    """Different numbers reject, except a count spelled out on one side only ("two essential
    elements" vs "the elements ... and ..."): a number written in digits always counts."""
    if nq and nc:
        return True
    one = q if nq else c
    return one.digit_numbers


# --- negation and antonyms ------------------------------------------------------------

def _negation_difference(q: Analysis, c: Analysis, q_nlp: Any, c_nlp: Any) -> str:
    """Non-empty when exactly one text negates what the other asserts.

    Each explicit English cue ("not", "without", "n't", "non-") negates the next content word. When
    one text has cues and the other none, the pair is rejected if a negated word occurs in the other
    text ("Can dogs eat chocolate?" / "Can dogs not eat chocolate?"). A negated word the other text
    does not use is read as the same meaning put another way ("not mandatory" / "optional"), and
    negation by meaning ("in the absence of", "avoid") counts as negation on either side. Chinese
    negation (not parsed for scope) and negations reported by an NLP analysis reject whenever the
    other side has no negation at all.
    """
    nlp_q, nlp_c = bool(getattr(q_nlp, "negations", None)), bool(getattr(c_nlp, "negations", None))
    neg_q, neg_c = q.negated or nlp_q, c.negated or nlp_c
    if neg_q == neg_c:
        return ""
    n, p, n_nlp = (q, c, nlp_q) if neg_q else (c, q, nlp_c)
    if n.zh is not None and n.zh.negated:
        return "negated (zh)"
    if n_nlp and not n.neg_scopes and not n.implicit_neg:
        return "negated (nlp)"
    lessened = en._lessened(p)
    replaced = None
    for scope in n.neg_scopes:
        if scope in lessened:  # "not as exact" / "less exact": the same comparison, not a contradiction
            continue
        if scope is None or scope in p.stem_set or scope in p.squashed:
            return f"negated {scope!r}"
        if replaced is None:
            replaced = bool(_differing(p, n)[0])
        if not replaced:  # "non-alcoholic beer" / "beer": nothing in the other text says it another way
            return f"negated {scope!r} (added)"
    return ""


def _antonym_pair(q: Analysis, c: Analysis) -> tuple[str, str] | None:
    only_q, only_c = q.word_set - c.word_set, c.word_set - q.word_set
    for w in only_q:
        opposites = en._ANTONYM_MAP.get(w)
        if opposites and opposites & only_c:
            return w, next(iter(opposites & only_c))
        for p in en._NEG_PREFIXES:  # able / unable, like / dislike, useful / useless
            if p + w in only_c and en._stem(w) not in q.neg_scopes:
                return w, p + w
            if w.startswith(p) and len(w) - len(p) >= 3 and w[len(p):] in only_c and en._stem(w[len(p):]) not in c.neg_scopes:
                return w, w[len(p):]
        if w.endswith("ful") and w[:-3] + "less" in only_c:
            return w, w[:-3] + "less"
        if w.endswith("less") and w[:-4] + "ful" in only_c:
            return w, w[:-4] + "ful"
    for w in only_q:  # two members of one closed class: red / yellow, summer / winter, local / remote
        for u in only_c:
            if rival(w, u) or rival(en._stem(w), en._stem(u)):
                return w, u
    if q.zh is not None and c.zh is not None:
        zq, zc = set(q.zh.content - c.zh.content), set(c.zh.content - q.zh.content)
        for w in zq:
            for u in zc:
                if rival(w, u):
                    return w, u
        return zh_antonym(zq, zc) or zh_text_antonym(q.zh.words, c.zh.words)
    return None


# --- names and content words -----------------------------------------------------------

def _nlp_entities(nlp: Any) -> set[str]:
    out: set[str] = set()
    for e in getattr(nlp, "entities", None) or ():
        text = e.get("text") if isinstance(e, dict) else getattr(e, "text", None)
        label = e.get("label") if isinstance(e, dict) else getattr(e, "label", None)
        if text and label not in ("CARDINAL", "ORDINAL", "QUANTITY", "PERCENT", "MONEY", "DATE", "TIME"):
            out.add(str(text).lower())
    return out


def _zh_content(a: Analysis) -> frozenset[str]:
    return a.zh.content if a.zh is not None else frozenset()


def differing_words(query: str, candidate: str) -> tuple[set[str], set[str]]:
    """Content words (English words as written, Chinese words) each text has and the other lacks."""
    only_q, only_c = _differing(analyze(query), analyze(candidate))
    return set(only_q), set(only_c)


def words_to_embed(query: str, candidate: str, scope: str = "slots") -> list[str]:
    """The differing words of two texts that only word vectors could still match (see :mod:`.evidence`)."""
    return _words_to_embed(analyze(query), analyze(candidate), scope)


def lexical_overlap(a: str, b: str) -> float:
    """Dice coefficient of the two texts' content-word stems (0..1; 1.0 when neither has any).

    Used to break near-ties between stored questions that embed almost equally close to a query.
    """
    x, y = analyze(a), analyze(b)
    cx, cy = x.content | _zh_content(x), y.content | _zh_content(y)
    if not cx and not cy:
        return 1.0
    return 2 * len(cx & cy) / (len(cx) + len(cy))
