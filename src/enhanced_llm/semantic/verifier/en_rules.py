"""English closed classes the verifier compares exactly: relative time, fractions and periods, the
dimension a measure question asks for, quantities of time, and the token order the role rule reads.

* **relative time** (:func:`relative_times`): today / tomorrow / yesterday / tonight, "the day after
  tomorrow", this / next / last / coming / past + week, weekend, month, year, quarter, a weekday or a
  season. Each becomes a token such as ``week+1``; an offset of 0 ("today", "this week") is *present*.
* **periods and fractions** (:func:`periods`): Q1-Q4 and "first quarter", H1/H2 and "first half",
  and fractions (half, quarter, "a third", "two thirds", "three quarters") as ``1/2``, ``1/4``...
* **measure dimension** (:func:`dimensions`): what a "how ..." question measures (how heavy ->
  weight, how much does it cost -> price, how long -> duration or length, how far -> length,
  how many minutes -> duration, "what's the distance" -> length...).
* **quantities** (:func:`quantities`): a number of a time, length or mass unit as an amount of the
  base unit ("half an hour" = "30 minutes" = 1800 s), so that equal amounts in other units agree.
* **order tokens** (:func:`order_tokens`): the stems in text order, with a possessive "'s" kept as a
  token of its own ("mom's brother" -> mom 's brother), for :mod:`.roles`.
"""

from __future__ import annotations

import re

from enhanced_llm.semantic.verifier import en

__all__ = ["dimensions", "order_tokens", "periods", "quantities", "relative_times",
           "ORDER_DROP", "ORDER_SYMMETRIC", "ORDER_PASSIVE", "ROLE_CONFLICTS"]

_OFFSET = {"this": 0, "current": 0, "next": 1, "coming": 1, "upcoming": 1, "last": -1, "past": -1, "previous": -1}
_SPANS = {
    "week": "week", "weekend": "weekend", "month": "month", "year": "year", "quarter": "quarter",
    "semester": "semester", "season": "season", "spring": "spring", "summer": "summer", "fall": "autumn",
    "autumn": "autumn", "winter": "winter", "morning": "morning", "afternoon": "afternoon",
    "evening": "evening", "night": "night", "monday": "monday", "tuesday": "tuesday",
    "wednesday": "wednesday", "thursday": "thursday", "friday": "friday", "saturday": "saturday", "sunday": "sunday",
}
_DAYS = {"today": ("day0",), "tonight": ("day0", "night"), "tomorrow": ("day+1",), "yesterday": ("day-1",)}
_TIME_OF_DAY = {"morning": "morning", "afternoon": "afternoon", "evening": "night", "night": "night", "noon": "noon"}


def relative_times(words: tuple[str, ...]) -> frozenset[str]:
    """Relative dates and times of day, as tokens ("day+1", "year-1", "weekend0", "night")."""
    out: set[str] = set()
    n = len(words)
    i = 0
    while i < n:
        w = words[i]
        nxt = words[i + 1] if i + 1 < n else ""
        if w == "day" and nxt in ("after", "before") and i + 2 < n and words[i + 2] in ("tomorrow", "yesterday"):
            out.add("day+2" if nxt == "after" else "day-2")
            i += 3
            continue
        if w in _DAYS:
            out.update(_DAYS[w])
        elif w in _OFFSET and nxt in _TIME_OF_DAY and w in ("this", "current"):
            out.update(("day0", _TIME_OF_DAY[nxt]))  # "this evening" = "tonight"
            i += 2
            continue
        elif w in _TIME_OF_DAY and i and words[i - 1] in _DAYS:
            out.add(_TIME_OF_DAY[w])  # "tomorrow morning"
        elif w in _OFFSET and nxt in _SPANS and not (w == "last" and i and words[i - 1] in ("the", "at")):
            # "this week", "next weekend", "last year" ("the last week of May" is a position, not a date)
            out.add(f"{_SPANS[nxt]}{_OFFSET[w]:+d}".replace("+0", "0"))
            i += 2
            continue
        i += 1
    return frozenset(out)


def present(token: str) -> bool:
    """Is the relative-time token the present ("today", "this week"): what a question means by default?"""
    return token.endswith("0") and not token.endswith(("+0", "-0"))


_FRACTIONS = {"half": "1/2", "halves": "1/2", "quarter": "1/4", "quarters": "1/4", "third": "1/3", "thirds": "1/3"}
_PERIOD_ORDINALS = {"first": 1, "second": 2, "third": 3, "fourth": 4, "1st": 1, "2nd": 2, "3rd": 3, "4th": 4}
_Q_RE = re.compile(r"q([1-4])")
_FRACTION_RE = re.compile(r"(\d)/(\d{1,2})")
_H_RE = re.compile(r"h([12])")
_COUNT = {"one": 1, "a": 1, "an": 1, "two": 2, "three": 3}


def periods(words: tuple[str, ...]) -> frozenset[str]:
    """Quarters and halves of a year ("Q1", "first quarter" -> Q1; "second half", H2 -> H2) and
    fractions ("a quarter tank" -> 1/4, "two thirds" -> 2/3, "half a tank" -> 1/2)."""
    out: set[str] = set()
    for i, w in enumerate(words):
        prev = words[i - 1] if i else ""
        if "-" in w and w.split("-", 1)[0] in ("half", "quarter"):
            w = w.split("-", 1)[0]  # "half-hour", "quarter-pound"
        if m := _FRACTION_RE.fullmatch(w):
            out.add(f"{int(m.group(1))}/{int(m.group(2))}")  # 1/4 cup
        elif m := _Q_RE.fullmatch(w):
            out.add(f"Q{m.group(1)}")
        elif (m := _H_RE.fullmatch(w)) and i + 1 < len(words) and words[i + 1][:1].isdigit():
            out.add(f"H{m.group(1)}")  # "H1 2024" (not "h1" the HTML heading)
        elif w in ("quarter", "half") and prev in _PERIOD_ORDINALS:
            out.add(("Q" if w == "quarter" else "H") + str(_PERIOD_ORDINALS[prev]))
        elif w in _FRACTIONS:
            if w.startswith("third") and prev not in _COUNT:
                continue  # "the third" is a position (the ordinal rule), "a third" / "two thirds" a fraction
            count = _COUNT.get(prev, 1) if w.endswith("s") and w != "halves" else 1
            out.add(f"{count}{_FRACTIONS[w][1:]}")
    return frozenset(out)


# "how" + adjective: the dimension asked for. "long" is a duration or a length.
_HOW = {
    "heavy": {"weight"}, "tall": {"height"}, "high": {"height"}, "wide": {"width"}, "broad": {"width"},
    "fast": {"speed"}, "quick": {"speed", "duration"}, "quickly": {"speed", "duration"}, "far": {"length"},
    "long": {"duration", "length"}, "big": {"size"}, "large": {"size"}, "old": {"age"}, "deep": {"depth"},
    "thick": {"thickness"}, "hot": {"temperature"}, "cold": {"temperature"}, "warm": {"temperature"},
    "expensive": {"price"}, "cheap": {"price"}, "often": {"frequency"}, "loud": {"loudness"},
}
_NOUNS = {
    "weight": "weight", "mass": "weight", "height": "height", "width": "width", "length": "length",
    "distance": "length", "speed": "speed", "velocity": "speed", "size": "size", "age": "age", "depth": "depth",
    "thickness": "thickness", "temperature": "temperature", "price": "price", "cost": "price", "population": "count",
}
_UNIT_DIMS = {
    "duration": "second minute hour day week month year decade century",
    "length": "mile kilometer km meter metre feet foot ft inch yard centimeter cm millimeter mm",
    "weight": "pound lb kilogram kg gram ounce oz ton",
    "price": "dollar euro pound cent buck",
}
_UNIT_DIM = {en._stem(u): d for d, units in _UNIT_DIMS.items() for u in units.split()}
_AUX_TIME = frozenset("does do did will would should can could to has have until before after till".split())
_PRICE_WORDS = frozenset(en._stem(w) for w in "cost price pay charge spend expensive cheap dollar money fee".split())


def dimensions(words: tuple[str, ...], stems: tuple[str, ...]) -> frozenset[str]:
    """What a measure question asks for: weight, price, duration, length, height, ... (empty: not one)."""
    out: set[str] = set()
    n = len(words)
    for i, w in enumerate(words):
        nxt = words[i + 1] if i + 1 < n else ""
        if w != "how" or not nxt:
            continue
        if nxt == "long" and i + 2 < n and words[i + 2] in _AUX_TIME:
            out.add("duration")  # how long does it take, how long to boil ("how long is the bridge": either)
        elif nxt in _HOW:
            out |= _HOW[nxt]
        elif nxt in ("much", "many"):
            unit = next((_UNIT_DIM[s] for s in stems[i + 2 : i + 4] if s in _UNIT_DIM), None)
            if unit:
                out.add(unit)  # how many minutes, how much money
            elif en._stem("weigh") in stems:
                out.add("weight")
            elif nxt == "much" and (_PRICE_WORDS & set(stems) or stems[i + 2 : i + 3] in (("be",), ("do",))):
                out.add("price")  # how much does it cost, how much is a piano
            elif nxt == "much" and stems[i + 2 : i + 3] == ("time",):
                out.add("duration")
            elif nxt == "many":
                out.add("count")  # "how much sleep" names no dimension: it agrees with any
    if not out:  # "What's the distance from ...", "What is the average weight of ...", "How much does it weigh"
        for i, w in enumerate(words):
            if w in _NOUNS and any(x in ("what", "whats") for x in words[max(0, i - 4) : i]):
                out.add(_NOUNS[w])
    return frozenset(out)


def word_dims(word: str) -> frozenset[str]:
    """The dimension a word of a measure question names ("long", "minutes", "distance", "weigh")."""
    stem = en._stem(word)
    out = set(_HOW.get(word, ())) | ({_UNIT_DIM[stem]} if stem in _UNIT_DIM else set())
    if word in _NOUNS:
        out.add(_NOUNS[word])
    if stem == "weigh":
        out.add("weight")
    return frozenset(out)


_SECONDS = {
    "second": 1, "minute": 60, "hour": 3600, "day": 86400, "week": 604800, "month": 2628000, "year": 31536000,
    "meter": 1, "metre": 1, "kilometer": 1000, "km": 1000, "centimeter": 0.01, "cm": 0.01, "millimeter": 0.001,
    "mm": 0.001, "gram": 1, "kilogram": 1000, "kg": 1000,
}
_BASE = {en._stem(u): v for u, v in _SECONDS.items()}
UNIT_STEMS = frozenset(_BASE)
#: Words that name a time of day or a relative day: no content difference between two texts that name the same time.
TIME_WORDS = frozenset(_TIME_OF_DAY) | frozenset(_DAYS) | frozenset(_OFFSET)
_UNIT_KIND = {en._stem(u): ("t" if v >= 1 and u in ("second", "minute", "hour", "day", "week", "month", "year") else
                            "m" if u in ("gram", "kilogram", "kg") else "l") for u, v in _SECONDS.items()}
_QTY_WORDS = {"half": 0.5, "quarter": 0.25, "a": 1, "an": 1, "one": 1}


def quantities(words: tuple[str, ...], stems: tuple[str, ...]) -> frozenset[tuple[tuple[str, ...], str, float]]:
    """(number as the numbers rule writes it, kind, amount in the base unit) for "3 hours", "half an
    hour", "thirty minutes", "a quarter of an hour"; kind "t" time, "l" length, "m" mass."""
    out: set[tuple[tuple[str, ...], str, float]] = set()
    for i, w in enumerate(words):
        value = None
        if w[:1].isdigit():
            try:
                value = float(w.replace(",", ""))
            except ValueError:
                continue
        elif w in ("a", "an") and i and words[i - 1] in ("half", "quarter", "of"):
            continue  # the "an" of "half an hour" counts no hour of its own
        elif w in en._EN_NUMBER_WORDS or w in _QTY_WORDS:
            value = float(_QTY_WORDS.get(w, en._EN_NUMBER_WORDS.get(w, 0)))
        if value is None or value == 0 or w.isdigit() and len(w) == 4:
            continue  # nothing, or a calendar year
        j = i + 1
        while j < len(words) and j <= i + 3 and words[j] in ("a", "an", "of"):
            j += 1  # "half an hour", "a quarter of an hour"
        if j < len(words) and stems[j] in _BASE and (j == i + 1 or w in ("half", "quarter")):
            numbers = (f"{value:g}",) if w not in ("a", "an", "quarter") else ()
            out.add((numbers, _UNIT_KIND[stems[j]], round(value * _BASE[stems[j]], 6)))
    return frozenset(out)


def order_tokens(text: str) -> tuple[str, ...]:
    """Stems in text order with "'s" as a token of its own; capitalised stop words (the US, IT) are
    kept as names (``NAME:`` prefix is not used: "us" / "US" differ only for the role rule)."""
    out: list[str] = []
    for tok in en._TOKEN_RE.findall(text.replace("\u2019", "'")):
        if tok.startswith("`"):
            out.append(tok.strip("`").lower())
            continue
        low = tok.lower().strip(".'-")
        poss = low.endswith("'s")
        if poss:
            low = low[:-2]
        if len(tok) >= 2 and tok.isupper() and low in en._STOP:
            low = "=" + low  # "the US": a name, not the pronoun
        out.append(en._stem(low) if low and not low.startswith("=") else low)
        if poss:
            out.append("'s")
    return tuple(out)


#: Tokens the role rule ignores when it compares what stands between two words.
ORDER_DROP = frozenset("a an the my your his her our their its some any please".split())
#: A relation that is the same read either way ("X and Y", "X or Y", "X vs Y", "compare X with Y").
ORDER_SYMMETRIC = frozenset("and or vs versus & with , between compare compared similar same equal different differ like".split())
#: Passive voice keeps the roles when the words change places ("A beat B" / "B was beaten by A").
ORDER_PASSIVE = frozenset({"by"})
#: A word after one of these prepositions on one side and the other on the other side has changed role.
ROLE_CONFLICTS = frozenset({("to", "from"), ("into", "from"), ("toward", "from"), ("towards", "from"), ("onto", "from")})
#: Verbs after which "with" is directional: "replace butter with oil" is not "replace oil with butter".
ORDER_DIRECTED = frozenset(en._stem(w) for w in "replace substitute swap exchange switch trade confuse mistake".split())
