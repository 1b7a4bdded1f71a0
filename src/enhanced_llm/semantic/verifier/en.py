"""English facts and rules for the verifier: stop words, a rule-based stemmer, number words,
ordinals, units, negation scope, antonyms, name-like tokens and the "X to Y" swap rule.

Morphology is a small rule-based stemmer (plural, -ing/-ed, final -e, common
irregular forms), not a list of benchmark words. The functions that take an
analysis read its ``words``, ``stems`` and sets (see :mod:`.analysis`).
"""

from __future__ import annotations

import re
from typing import Any

from enhanced_llm.semantic.verifier.memo import memo

_STOP = frozenset(
    """a an the and or but if then else of in on at to for from by with about as into onto than
    is are was were be been being am do does did done doing have has had having can could will would
    shall should may might must i me my mine we us our you your yours he him his she her it its they
    them their this that these those there here what which who whom whose when where why how whats
    hows whos wheres whys all any some each every both either most more much many such own same so
    very too just also only even still again ever yet please tell give explain show let lets get
    got make way ways thing things one ones someone something anyone anything out up over under
    between through during after before while because until via per vs versus like best good
    difference differences use used using possible know need want""".split()
)

_EN_NEG = frozenset("not no never without nobody nothing none neither nor cannot nowhere".split())

_EN_ANTONYMS = [
    ("increase", "decrease"), ("increase", "reduce"), ("raise", "lower"), ("gain", "lose"),
    ("buy", "sell"), ("buyer", "seller"), ("borrow", "lend"), ("send", "receive"), ("import", "export"),
    ("upload", "download"), ("encrypt", "decrypt"), ("encode", "decode"), ("compress", "decompress"),
    ("max", "min"), ("maximum", "minimum"), ("maximize", "minimize"), ("most", "least"), ("more", "less"),
    ("best", "worst"), ("better", "worse"), ("good", "bad"), ("first", "last"), ("before", "after"),
    ("above", "below"), ("top", "bottom"), ("upper", "lower"), ("high", "low"), ("higher", "lower"),
    ("highest", "lowest"), ("big", "small"), ("bigger", "smaller"), ("biggest", "smallest"),
    ("large", "small"), ("larger", "smaller"), ("largest", "smallest"), ("long", "short"),
    ("longest", "shortest"), ("fast", "slow"), ("faster", "slower"), ("fastest", "slowest"),
    ("hot", "cold"), ("warm", "cool"), ("heat", "cool"), ("early", "late"), ("earliest", "latest"),
    ("old", "new"), ("oldest", "newest"), ("young", "old"), ("cheap", "expensive"), ("cheapest", "expensive"),
    ("easy", "hard"), ("easy", "difficult"), ("strong", "weak"), ("heavy", "light"), ("rich", "poor"),
    ("win", "lose"), ("winner", "loser"), ("success", "failure"), ("succeed", "fail"), ("true", "false"),
    ("pro", "con"), ("pros", "cons"), ("advantage", "disadvantage"), ("benefit", "drawback"),
    ("positive", "negative"), ("love", "hate"), ("accept", "reject"), ("allow", "deny"), ("allow", "block"),
    ("open", "close"), ("start", "stop"), ("start", "end"), ("begin", "end"), ("enable", "disable"),
    ("add", "remove"), ("add", "delete"), ("insert", "delete"), ("include", "exclude"), ("push", "pull"),
    ("input", "output"), ("client", "server"), ("left", "right"), ("inner", "outer"), ("inside", "outside"),
    ("internal", "external"), ("north", "south"), ("east", "west"), ("male", "female"), ("man", "woman"),
    ("men", "women"), ("boy", "girl"), ("husband", "wife"), ("father", "mother"), ("son", "daughter"),
    ("ascending", "descending"), ("uppercase", "lowercase"), ("synchronous", "asynchronous"),
    ("sync", "async"), ("frontend", "backend"), ("forward", "backward"), ("horizontal", "vertical"),
    ("login", "logout"), ("connect", "disconnect"), ("lock", "unlock"), ("install", "uninstall"),
    ("attack", "defend"), ("offense", "defense"), ("wet", "dry"), ("dark", "light"), ("happy", "sad"),
    ("safe", "dangerous"), ("legal", "illegal"), ("minor", "major"), ("always", "never"), ("all", "none"),
    ("healthy", "unhealthy"), ("deep", "shallow"), ("wide", "narrow"), ("thick", "thin"), ("fat", "thin"),
    ("near", "far"), ("cause", "effect"), ("entry", "exit"), ("enter", "exit"), ("arrive", "depart"),
    ("arrival", "departure"), ("import", "export"), ("profit", "loss"), ("asset", "liability"),
    ("debit", "credit"), ("bull", "bear"), ("bullish", "bearish"), ("overestimate", "underestimate"),
]

_EN_NUMBER_WORDS = {
    w: i
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
        "sixteen seventeen eighteen nineteen twenty".split()
    )
} | {"thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90,
     "hundred": 100, "thousand": 1000, "million": 10**6, "billion": 10**9, "dozen": 12,
     "half": 0.5, "twice": 2, "once": 1, "thrice": 3, "double": 2, "triple": 3}

# "one" is too often a pronoun ("which one", "one of"): it counts only before a unit ("one day").
_EN_WEAK_NUMBER_WORDS = frozenset({"one", "once", "double"})

_EN_MAGNITUDES = frozenset({"hundred", "thousand", "million", "billion", "dozen"})

_EN_ORDINALS = {
    w: i + 1
    for i, w in enumerate(
        "first second third fourth fifth sixth seventh eighth ninth tenth eleventh twelfth thirteenth "
        "fourteenth fifteenth sixteenth seventeenth eighteenth nineteenth twentieth".split()
    )
}

# "at first", "first of all" (discourse markers); "a second", "per second" (a unit of time).
_ORDINAL_NOT_BEFORE = frozenset({"at", "a", "per", "one", "each", "every", "split"})

_DIGIT_ORDINAL_RE = re.compile(r"(\d+)(?:st|nd|rd|th)")

# List markers ("1. ", "2) ") number items, they are not quantities; "v2.1" is version 2.1.
_ENUMERATOR_RE = re.compile(r"(?:^|(?<=[\n:;])|(?<=[.!?]\s))\s*\(?\d{1,2}[.)](?=\s)|(?<![\w(.])\d{1,2}\)(?=\s)")

_VERSION_V_RE = re.compile(r"(?<![A-Za-z0-9_])[vV](?=\d)")

_TOKEN_RE = re.compile(r"`[^`]+`|->|→|[A-Za-z0-9_][A-Za-z0-9_.\-/+#']*[A-Za-z0-9_+#]|[A-Za-z0-9]|[\u4e00-\u9fff]+")

_NUM_RE = re.compile(r"(?<![A-Za-z0-9_])[-+]?\d+(?:,\d{3})*(?:\.\d+)?(?:st|nd|rd|th)?%?")

_SENT_START_RE = re.compile(r"(?:^|[.!?。！？\n]\s*)([A-Za-z][\w\-]*)")

def _inflections(word: str) -> set[str]:
    """A word with its common English inflections (increase -> increases, increased, increasing ...)."""
    forms = {word, word + "s", word + "es", word + "ed", word + "d", word + "ing", word + "er", word + "est"}
    if word.endswith("e"):
        forms |= {word[:-1] + "ing", word[:-1] + "ed"}
    if word.endswith("y"):
        forms |= {word[:-1] + "ies", word[:-1] + "ied"}
    if len(word) >= 3 and word[-1] not in "aeiouwy" and word[-2] in "aeiou" and word[-3] not in "aeiou":
        forms |= {word + word[-1] + "ed", word + word[-1] + "ing", word + word[-1] + "er", word + word[-1] + "est"}
    return forms

_IRREGULAR = {
    "men": "man", "women": "woman", "children": "child", "people": "person", "mice": "mouse",
    "feet": "foot", "teeth": "tooth", "geese": "goose", "indices": "index", "matrices": "matrix",
    "vertices": "vertex", "analyses": "analysis", "criteria": "criterion", "phenomena": "phenomenon",
    "lives": "life", "wives": "wife", "knives": "knife", "leaves": "leaf", "halves": "half",
    "is": "be", "are": "be", "was": "be", "were": "be", "been": "be", "being": "be", "am": "be",
    "has": "have", "had": "have", "having": "have", "does": "do", "did": "do", "done": "do",
    "went": "go", "gone": "go", "made": "make", "took": "take", "taken": "take", "got": "get",
    "gotten": "get", "ran": "run", "wrote": "write", "written": "write", "ate": "eat", "eaten": "eat",
    "bought": "buy", "sold": "sell", "thought": "think", "brought": "bring", "began": "begin",
    "begun": "begin", "chose": "choose", "chosen": "choose", "knew": "know", "known": "know",
    "grew": "grow", "grown": "grow", "drew": "draw", "drawn": "draw", "flew": "fly", "flown": "fly",
    "gave": "give", "given": "give", "saw": "see", "seen": "see", "spoke": "speak", "spoken": "speak",
    "found": "find", "kept": "keep", "left": "leave", "lost": "lose", "meant": "mean", "paid": "pay",
    "said": "say", "sent": "send", "slept": "sleep", "spent": "spend", "stood": "stand", "told": "tell",
    "taught": "teach", "won": "win", "built": "build", "held": "hold", "led": "lead", "felt": "feel",
}

_NO_STRIP_S = ("ss", "us", "is", "ous", "ics", "sis", "xis")

_STEM_CACHE_MAX_CHARS = 32  # longer words are stemmed each time, never held (see .memo)


def _stem_word(word: str) -> str:
    """A crude, deterministic English stem: plural, -ing/-ed and final -e removed, so that
    "copies", "copying", "copied" and "copy", or "makes", "making" and "make", compare equal."""
    w = word.lower()
    if w in _IRREGULAR:
        return _IRREGULAR[w]
    if not w.isalpha() or len(w) <= 3:
        return w
    if w.endswith("ies") and len(w) > 4:
        w = w[:-3] + "y"
    elif w.endswith(("sses", "shes", "ches", "xes", "zes")):
        w = w[:-2]
    elif w.endswith("s") and not w.endswith(_NO_STRIP_S):
        w = w[:-1]
    for suf in ("ing", "ied", "ed"):
        if w.endswith(suf) and len(w) - len(suf) >= 3:
            w = w[: -len(suf)] + ("y" if suf == "ied" else "")
            if len(w) >= 4 and w[-1] == w[-2] and w[-1] not in "aeiouls":  # running -> run
                w = w[:-1]
            break
    if w.endswith("e") and len(w) > 3 and not w.endswith("ee"):
        w = w[:-1]
    return w

_stem = memo(max_chars=_STEM_CACHE_MAX_CHARS)(_stem_word)

# Words that negate by their meaning; they make a text negated but have no scope we can read.
_IMPLICIT_NEG_STEMS = frozenset(
    _stem(w)
    for w in """absence absent lack lacking avoid avoiding prevent preventing omit omitting exclude excluding
    fail failing failure unable impossible refuse deny except instead zero
    """.split()
)

# Units of measure (time, length, mass, volume): a number before one of them is a quantity.
_UNIT_STEMS = frozenset(
    _stem(w)
    for w in """millisecond second minute hour day week month year decade century millimeter centimeter
    meter metre kilometer km cm mm mile inch foot yard gram kilogram kg lb pound ounce ton liter litre gallon""".split()
)

# Hyphenated prefixes that negate the rest of the word: non-streaming, no-code, zero-copy.
_NEG_HYPHEN_PREFIXES = ("non-", "no-", "zero-", "not-")

# "not only", "not just", "whether ... or not", "no longer" does negate; "no doubt" does not.
_NEG_IDIOM_NEXT = frozenset({"only", "just", "merely", "simply", "doubt", "matter", "wonder"})

# Auxiliaries and determiners skipped when looking for the word a cue negates.
_SCOPE_SKIP = frozenset(
    """a an the be is are was were been being am do does did have has had having to of any anything anyone
    some my your his her its our their this that these those it i you he she we they me him us them there
    really necessarily always even yet longer enough quite very so too just also all much many ever as""".split()
)

_INTERJECTION_NO_RE = re.compile(r"(?:^|[.!?\n]\s*)(?:no|nope)\s*[,.!;:]", re.I)

def _negation_scopes(text: str, words: list[str], stems: tuple[str, ...]) -> tuple[tuple[str | None, ...], bool]:
    """Explicit negation cues with the stem of the word each negates, and whether an implicit one occurs."""
    scopes: list[str | None] = []
    implicit = False
    skip_no = len(_INTERJECTION_NO_RE.findall(text))  # "No, it doesn't ..." answers, it does not negate
    n = len(words)
    for i, w in enumerate(words):
        if w.startswith(_NEG_HYPHEN_PREFIXES) and "-" in w:
            scopes.append(_stem(w.split("-", 1)[1]))
            continue
        if stems[i] in _IMPLICIT_NEG_STEMS or (w == "too" and "to" in words[i + 2 : i + 4]):
            implicit = True  # "too large to fit" = does not fit
            continue
        if not (w in _EN_NEG or w.endswith("n't")):
            continue
        if i == 0 and w.endswith("n't"):
            continue  # "Isn't it dangerous ...?" asks what "Is it dangerous ...?" asks
        if w in ("no", "nope") and skip_no:
            skip_no -= 1
            continue
        nxt = words[i + 1] if i + 1 < n else ""
        if nxt in _NEG_IDIOM_NEXT or (w == "not" and i and words[i - 1] == "or"):
            continue
        scope = None
        for j in range(i + 1, min(n, i + 5)):
            if words[j] not in _SCOPE_SKIP and not words[j].endswith("n't"):
                scope = stems[j]
                break
        scopes.append(scope)
    return tuple(scopes), implicit

def _build_antonym_map() -> dict[str, set[str]]:
    groups: dict[str, set[str]] = {}
    for a, b in _EN_ANTONYMS:
        fa, fb = _inflections(a), _inflections(b)
        for f in fa:
            groups.setdefault(f, set()).update(fb - fa)
        for f in fb:
            groups.setdefault(f, set()).update(fa - fb)
    return groups

_ANTONYM_MAP = _build_antonym_map()

_NEG_PREFIXES = ("un", "dis", "in", "im", "il", "ir", "non", "non-", "de")

def _canon_number(raw: str) -> str:
    s = raw.lower().rstrip("%").replace(",", "")
    for suf in ("st", "nd", "rd", "th"):
        if s.endswith(suf):
            s = s[: -len(suf)]
    try:
        v = float(s)
    except ValueError:
        return raw
    return f"{v:g}" + ("%" if raw.endswith("%") else "")

def _ordinals(words: list[str]) -> frozenset[int]:
    """Positions the text names: ordinal words ("the second debate") and digits ("2nd"), but not
    "at first", "first of all" or a unit of time ("a second", "per second")."""
    out = set()
    for i, w in enumerate(words):
        prev, nxt = words[i - 1] if i else "", words[i + 1] if i + 1 < len(words) else ""
        if w in _EN_ORDINALS and prev not in _ORDINAL_NOT_BEFORE and not (w == "first" and nxt == "of"):
            out.add(_EN_ORDINALS[w])
        elif m := _DIGIT_ORDINAL_RE.fullmatch(w):
            out.add(int(m.group(1)))
    return frozenset(out)

def _units(words: list[str], stems: tuple[str, ...]) -> frozenset[str]:
    """Units that follow a number, in digits or words ("3 weeks", "three days", "one hour")."""
    return frozenset(
        stems[i + 1]
        for i, w in enumerate(words[:-1])
        if stems[i + 1] in _UNIT_STEMS and (w[:1].isdigit() or w in _EN_NUMBER_WORDS)
    )

# Lower-case words joined by "/" ("and/or", "downloaded/processed"): alternatives, not a path.
_ALTERNATION_RE = re.compile(r"[a-z]+(?:/[a-z]+)+")

# Lower-case dotted abbreviations ("e.g", "i.e", "a.k.a"): not identifiers ("U.S" stays a name).
_ABBREVIATION_RE = re.compile(r"[a-z](?:\.[a-z])+\.?")

def _is_entity_token(tok: str, at_start: bool) -> bool:
    letters = [c for c in tok if c.isalpha()]
    if not letters:
        return False
    if _ALTERNATION_RE.fullmatch(tok) or _ABBREVIATION_RE.fullmatch(tok):
        return False
    if any(c in tok for c in "_./#+") and len(tok) > 2:  # identifiers, paths, versions, C#/C++
        return True
    if any(c.isdigit() for c in tok):  # gpt4, python3, b2b
        return True
    upper = sum(c.isupper() for c in letters)
    if upper >= 2 and tok.isalpha() and tok.isupper() and tok.lower() in _STOP:
        return False  # "ALL", "NOT", "THE": a function word in capitals is emphasis, not a name
    if upper >= 2:  # acronyms, CamelCase, iPhone
        return True
    if upper == 1 and (tok[0].isupper() or tok[0].islower() and upper):
        if tok[0].islower():  # iPhone-style
            return True
        low = tok.lower()
        if low in _STOP or low in _EN_NEG or low in _EN_NUMBER_WORDS:
            return False
        return not at_start  # a capital that only starts a sentence proves nothing
    return False

# Capitalised only because they start a sentence: common question and sentence openers.
_COMMON_START = frozenset(
    """yes no so well ok okay hi hello hey now today tomorrow yesterday currently generally usually
    given suppose assume imagine consider write create convert translate describe define list name
    find calculate compute summarize compare recommend suggest provide help learn check keep try""".split()
)

def _lessened(a: Any) -> set[str]:
    """Stems of the words a text qualifies with "less" or "fewer" ("less exact" -> "exact")."""
    return {a.stems[i + 1] for i, w in enumerate(a.words[:-1]) if w in ("less", "fewer")}

_NEAR = 2  # content words looked at on each side of a direction marker

_EN_MARKERS = frozenset(("to", "into", "than", "in", "per", "->", "→", "towards", "toward"))

_COMPARATIVE = frozenset({"more", "less", "better", "worse", "rather"})

def _is_comparative(w: str) -> bool:
    return w in _COMPARATIVE or (len(w) > 4 and w.endswith("er") and w.isalpha())

def _marker_sides(a: Any) -> list[tuple[str, list[str], list[str]]]:
    """For each direction marker: the nearest content stems on its left and on its right, nearest first.

    "How many kilometers are in a mile?" -> [(["kilometer", "many"], ["mile"])].
    """
    out = []
    words, stems = a.words, a.stems
    for i, w in enumerate(words):
        if w not in _EN_MARKERS or i == 0:
            continue
        left: list[str] = []
        for j in range(i - 1, max(-1, i - 6), -1):
            x = words[j]
            if x in _STOP or x[:1].isdigit() or x in _EN_MARKERS or (w == "than" and _is_comparative(x)):
                continue
            left.append(stems[j])
            if len(left) == _NEAR:
                break
        right: list[str] = []
        for j in range(i + 1, min(len(words), i + 6)):
            x = words[j]
            if x in _EN_MARKERS:
                break
            if x in _STOP or x[:1].isdigit():
                continue
            right.append(stems[j])
            if len(right) == _NEAR:
                break
        if left and right:
            out.append((w, left, right))
    return out

def _en_swapped(q: Any, c: Any) -> bool:
    """Two content words trade places across a direction marker ("X to Y" / "Y to X").

    The word next to the marker on one side must be among the words next to it on the other side
    in the other text, both ways: "convert Celsius to Fahrenheit" / "convert Fahrenheit to Celsius",
    "kilometers in a mile" / "miles in a kilometer", "cheetah faster than a lion" / "lion faster
    than a cheetah". Looser reorderings (passive voice, moved clauses) do not count.
    """
    sides_q, sides_c = _marker_sides(q), _marker_sides(c)
    # A relation both texts state ("examples to the tokenizer" in each) is not a swap candidate.
    pairs_q = {(m, l[0], r[0]) for m, l, r in sides_q}
    pairs_c = {(m, l[0], r[0]) for m, l, r in sides_c}
    for mq, lq, rq in sides_q:
        if (mq, lq[0], rq[0]) in pairs_c:
            continue
        for mc, lc, rc in sides_c:
            if mc != mq or (mc, lc[0], rc[0]) in pairs_q:
                continue
            if (
                lq[0] != lc[0]
                and lq[0] in rc
                and lc[0] in rq
                and lq[0] not in rq
                and lc[0] not in lq
                and lq[0] not in lc
                and lc[0] not in rc
            ):
                return True
    return False
