"""Decide whether a cached question may answer a new one.

Embeddings say two questions are *about* the same thing; they are poor at
saying the questions *ask* the same thing. "Convert Celsius to Fahrenheit"
and "convert Fahrenheit to Celsius" score ~0.99 cosine. :class:`Verifier`
runs cheap, general rules over both texts after the similarity threshold and
rejects the pair when one of them finds a difference that changes the answer.

Rules, in order (each rejection has its own reason string):

``unrepresentable``  the embedding model's tokenizer sees mostly ``[UNK]`` in
                     either text (e.g. Chinese under the English MiniLM), so its
                     similarity means nothing.
``truncated``        either text is longer than the model reads; the unread tail
                     may differ.
``number_mismatch``  the numbers differ (digits, English number words, Chinese
                     numerals; "3" == "three"). List markers ("1) ", "2. ") and
                     vague magnitudes ("several thousand") are not numbers; a
                     count spelled out on one side only ("two steps" / "the
                     steps") is tolerated, a number in digits never is.
                     "one" counts before a unit ("one day" / "four days"); an
                     ordinal both texts name agrees ("2nd" == "second").
``ordinal_mismatch`` both texts name positions and they differ ("first debate" /
                     "second debate"; "at first", "a second" are no ordinals).
``unit_mismatch``    both texts measure something and share no unit ("3 weeks" /
                     "three days").
``negation_mismatch`` one text negates what the other asserts. Each explicit cue
                     ("not", "n't", "without", "non-", "no-") negates the next
                     content word; the pair is rejected when that word occurs in
                     the un-negated text. Negation by meaning ("absence",
                     "avoid", "too big to") counts on either side, idioms ("not
                     only", "or not", an answer's leading "No,") do not; "not
                     as X" skips "as", and "less X" agrees with it.
``antonym``          one text uses a word whose opposite the other uses
                     (a compact general table, plus un-/dis-/in-/non- and
                     -ful/-less; "without X" and "non-X" agree).
``swapped_roles``    two content words trade places across the same direction
                     word ("X to Y", "from X to Y", "X than Y", "X in a Y";
                     "从X到Y", "X比Y"...), compared on crude stems so plural and
                     singular forms match ("kilometers in a mile" / "miles in a
                     kilometer").
``entity_mismatch``  each text names something the other does not (proper
                     nouns, acronyms, identifiers, code spans; for Chinese the
                     non-shared content characters on both sides). A name counts
                     as shared when the other text has it in any casing, spacing,
                     stem or as CamelCase initials ("JS" / "JavaScript").
                     Not names: lower-case alternatives ("downloaded/processed"),
                     dotted abbreviations ("e.g."), function words in capitals
                     ("ALL").

:meth:`Verifier.same_question` (used by ``SemanticCache.choose``, not a rejection
of one pair) says whether two *stored* questions use the same content words, i.e.
are one question stored twice.

Morphology is a small rule-based stemmer (plural, -ing/-ed, final -e, common
irregular forms), not a list of benchmark words.

Optional NLP results (anything with ``entities``, ``numbers`` and ``negations``
attributes, such as ``enhanced_llm.nlp.NLPResult``) add to what the rules
extract. Typical cost: 20-100 µs per pair (per-text analysis is cached).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, Iterable

__all__ = ["Verdict", "Verifier", "REASONS", "lexical_overlap"]

REASONS = (
    "identical",
    "ok",
    "unrepresentable",
    "truncated",
    "number_mismatch",
    "ordinal_mismatch",
    "unit_mismatch",
    "negation_mismatch",
    "antonym",
    "swapped_roles",
    "entity_mismatch",
)


@dataclass(frozen=True, slots=True)
class Verdict:
    accepted: bool
    reason: str
    detail: str = ""

    def __bool__(self) -> bool:
        return self.accepted


# --- word lists (general English/Chinese, not tied to any data set) -------------

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
_ZH_NEG = ("没有", "不", "没", "别", "无", "非", "未", "勿", "莫")
# Compounds with a negation character that do not negate.
_ZH_NEG_FALSE = ("非常", "无论", "不过", "不仅", "不断", "除非", "并非不", "不少", "毫无疑问", "无线", "莫名")

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
_ZH_ANTONYMS = [
    ("增加", "减少"), ("增长", "下降"), ("上升", "下降"), ("上涨", "下跌"), ("提高", "降低"), ("升高", "降低"),
    ("买", "卖"), ("买入", "卖出"), ("借入", "借出"), ("上传", "下载"), ("加密", "解密"), ("压缩", "解压"),
    ("最好", "最差"), ("最好", "最坏"), ("最大", "最小"), ("最高", "最低"), ("最多", "最少"), ("最快", "最慢"),
    ("最早", "最晚"), ("最长", "最短"), ("最贵", "最便宜"), ("优点", "缺点"), ("好处", "坏处"), ("利", "弊"),
    ("大", "小"), ("高", "低"), ("上", "下"), ("前", "后"), ("多", "少"), ("长", "短"), ("快", "慢"),
    ("早", "晚"), ("冷", "热"), ("新", "旧"), ("好", "坏"), ("好", "差"), ("胖", "瘦"), ("贵", "便宜"),
    ("增", "减"), ("升", "降"), ("涨", "跌"), ("开", "关"), ("进", "出"), ("左", "右"), ("东", "西"),
    ("南", "北"), ("男", "女"), ("输", "赢"), ("胜", "负"), ("正", "负"), ("加", "减"), ("收", "发"),
    ("难", "易"), ("简单", "复杂"), ("容易", "困难"), ("安全", "危险"), ("成功", "失败"), ("真", "假"),
    ("对", "错"), ("内", "外"), ("深", "浅"), ("远", "近"), ("宽", "窄"), ("厚", "薄"), ("轻", "重"),
    ("强", "弱"), ("开始", "结束"), ("打开", "关闭"), ("启用", "禁用"), ("添加", "删除"), ("支持", "反对"),
    ("喜欢", "讨厌"), ("升序", "降序"), ("导入", "导出"), ("输入", "输出"), ("盈利", "亏损"), ("以前", "以后"),
    ("之前", "之后"), ("入", "出"), ("老", "年轻"),
]
# Chinese function characters: not "content" when comparing what two questions do not share.
_ZH_FUNCTION = frozenset(
    "的了吗呢吧啊呀么是在有和与及或就都也还又很太更最请问我你他她它们这那哪些个种样怎如何什为"
    "能会可以要想应该把被给让从到对于关其中之而且并等着过得地一下吗么呢嘛哦嗯您咱啥多少几"
    "如果因所以但是用来去做说讲告诉介绍解释一下比较什么怎么样如何为什么哪里谁时候"
)
_ZH_DIGITS = {"零": 0, "〇": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8, "九": 9}
_ZH_UNITS = {"十": 10, "百": 100, "千": 1000, "万": 10_000, "亿": 100_000_000}
# Measure words and units that make a lone Chinese numeral a number ("三个", "五年"), not part of a word ("一样").
_ZH_MEASURE = frozenset("个只本次年月日天号岁元块米公斤克度倍人位条张件页章节点分秒周小时里层种部台辆杯碗斤位名级")
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

_ZH_DIRECTION = ("转换成", "转换为", "换算成", "换算为", "转成", "转为", "换成", "变成", "译成", "译为", "改成", "改为", "到", "至", "比", "去", "往")

_TOKEN_RE = re.compile(r"`[^`]+`|->|→|[A-Za-z0-9_][A-Za-z0-9_.\-/+#']*[A-Za-z0-9_+#]|[A-Za-z0-9]|[\u4e00-\u9fff]+")
_NUM_RE = re.compile(r"(?<![A-Za-z0-9_])[-+]?\d+(?:,\d{3})*(?:\.\d+)?(?:st|nd|rd|th)?%?")
_ZH_NUM_RE = re.compile(r"[零〇一二两三四五六七八九十百千万亿]+")
_CJK_RE = re.compile(r"[\u4e00-\u9fff]")
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


# --- morphology (general English, rule-based) ------------------------------------------

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


@lru_cache(maxsize=65536)
def _stem(word: str) -> str:
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


# --- negation ------------------------------------------------------------------------

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


@dataclass(frozen=True, slots=True)
class _Analysis:
    """Per-text facts the rules compare (cached by text)."""

    text: str
    norm: str
    words: tuple[str, ...]  # lower-cased tokens, in order
    word_set: frozenset[str]
    numbers: tuple[str, ...]  # sorted canonical numbers
    ordinals: frozenset[int]  # positions named by ordinal words or digits ("second", "3rd")
    units: frozenset[str]  # stems of the units that follow a number ("3 weeks" -> "week")
    digit_numbers: bool  # some number is written with digits (or Chinese numerals), not only as an English word
    negated: bool
    entities: frozenset[str]
    cjk: str  # the Chinese characters, in order
    zh_content: frozenset[str]
    stems: tuple[str, ...]  # _stem() of every word, in order (for the swap rule)
    stem_set: frozenset[str]
    content: frozenset[str]  # stems of the content words (not stop words, not numbers)
    squashed: str  # lower-cased letters and digits only ("Hugging Face.js" -> "huggingfacejs")
    initialisms: frozenset[str]  # capitals of CamelCase tokens ("JavaScript" -> "js")
    neg_scopes: tuple[str | None, ...]  # per explicit negation cue: stem of the word it negates (None: unknown)
    implicit_neg: bool  # a word that negates by meaning ("absence", "avoid", "non-...")


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


def _zh_numeral_value(run: str) -> float | None:
    total, section, digit = 0, 0, 0
    for ch in run:
        if ch in _ZH_DIGITS:
            digit = _ZH_DIGITS[ch]
        elif ch in _ZH_UNITS:
            unit = _ZH_UNITS[ch]
            if unit >= 10_000:
                total += (section + digit) * unit
                section = digit = 0
            else:
                section += (digit or 1) * unit
                digit = 0
    return float(total + section + digit)


def _zh_numbers(text: str) -> list[str]:
    out = []
    for m in _ZH_NUM_RE.finditer(text):
        run = m.group()
        nxt = text[m.end() : m.end() + 1]
        prev = text[m.start() - 1 : m.start()]
        # A single numeral character is a number only before a measure word (三个, 五年), and not after
        # 第/统/唯 style word starts; longer runs (二十, 三百) are numbers.
        if len(run) == 1 and (nxt not in _ZH_MEASURE or prev in ("统", "唯", "万", "之")):
            continue
        v = _zh_numeral_value(run)
        if v is not None:
            out.append(f"{v:g}")
    return out


@lru_cache(maxsize=8192)
def _analyze(text: str) -> _Analysis:
    text = text.replace("\u2019", "'").replace("\u2018", "'")
    norm = " ".join(text.lower().split())
    raw_tokens = _TOKEN_RE.findall(text)
    words: list[str] = []
    entities: set[str] = set()
    sentence_starts = {m.start(1) for m in _SENT_START_RE.finditer(text)}
    pos = 0
    for tok in raw_tokens:
        start = text.find(tok, pos)
        pos = start + len(tok) if start >= 0 else pos
        if _CJK_RE.match(tok):
            continue
        low = tok.strip("`").lower().strip(".'-")
        if low.endswith("'s"):
            low = low[:-2]
        words.append(low)
        if tok.startswith("`"):
            entities.add(low)
        elif _is_entity_token(tok, at_start=start in sentence_starts):
            entities.add(low)
    num_text = _ENUMERATOR_RE.sub(" ", _VERSION_V_RE.sub("", text))
    numbers = [_canon_number(m.group()) for m in _NUM_RE.finditer(num_text)]
    digit_numbers = bool(numbers)
    for i, w in enumerate(words):
        if w in _EN_NUMBER_WORDS and w not in _EN_WEAK_NUMBER_WORDS:
            # "several thousand", "hundreds": a magnitude word alone is a vague amount, not a number.
            if w in _EN_MAGNITUDES and not (i and (words[i - 1] in _EN_NUMBER_WORDS or words[i - 1][:1].isdigit())):
                continue
            numbers.append(f"{_EN_NUMBER_WORDS[w]:g}")
    stems = tuple(_stem(w) for w in words)
    ordinals, units = _ordinals(words), _units(words, stems)
    if any(w == "one" and i + 1 < len(words) and stems[i + 1] in _UNIT_STEMS for i, w in enumerate(words)):
        numbers.append("1")  # "one day" is a quantity even though "one" alone is usually a pronoun
    cjk = "".join(_CJK_RE.findall(text))
    numbers += _zh_numbers(cjk)
    entities -= {n for n in entities if _NUM_RE.fullmatch(n)}
    zh_negated = _zh_negated(cjk)
    neg_scopes, implicit_neg = _negation_scopes(text, words, stems)
    negated = bool(neg_scopes) or zh_negated
    zh_content = frozenset(ch for ch in cjk if ch not in _ZH_FUNCTION and ch not in _ZH_DIGITS and ch not in _ZH_UNITS)
    initialisms = set()
    for tok in raw_tokens:
        caps = "".join(ch for ch in tok if ch.isupper())
        if len(caps) >= 2 and not tok.isupper():
            initialisms.add(caps.lower())
    return _Analysis(
        text=text,
        norm=norm,
        words=tuple(words),
        word_set=frozenset(words),
        numbers=tuple(sorted(numbers)),
        ordinals=ordinals,
        units=units,
        digit_numbers=digit_numbers or bool(_zh_numbers(cjk)),
        negated=negated,
        entities=frozenset(entities),
        cjk=cjk,
        zh_content=zh_content,
        stems=stems,
        stem_set=frozenset(stems),
        content=frozenset(st for w, st in zip(words, stems) if w not in _STOP and not w[:1].isdigit() and w not in _EN_NUMBER_WORDS),
        squashed=re.sub(r"[^0-9a-z]+", "", norm),
        initialisms=frozenset(initialisms),
        neg_scopes=neg_scopes,
        implicit_neg=implicit_neg or (zh_negated and not neg_scopes),
    )


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


def _zh_negated(cjk: str) -> bool:
    if not cjk:
        return False
    s = cjk
    for w in _ZH_NEG_FALSE:
        s = s.replace(w, "")
    return any(n in s for n in _ZH_NEG)


def _covered(word: str, other: _Analysis) -> bool:
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
    stem = _stem(word)
    return len(stem) >= 3 and (stem in other.stem_set or stem in other.norm)


class Verifier:
    """Rule-based check that a cached question answers a new one.

    ``text_info`` (optional) maps a text to an object with ``coverage`` (share of
    wordpieces the embedding model knows) and ``truncated``; the embedder's
    :meth:`~enhanced_llm.semantic.embedder.Embedder.text_info` fits.
    """

    def __init__(
        self,
        text_info: Callable[[str], Any] | None = None,
        *,
        min_coverage: float = 0.9,
        one_sided_entities: bool = False,
    ) -> None:
        self.text_info = text_info
        self.min_coverage = min_coverage
        self.one_sided_entities = one_sided_entities

    def verify(self, query: str, candidate: str, query_nlp: Any = None, candidate_nlp: Any = None) -> Verdict:
        """Accept or reject ``candidate`` (a cached question) as an answer source for ``query``."""
        q, c = _analyze(query), _analyze(candidate)
        if q.norm == c.norm:
            return Verdict(True, "identical")
        if self.text_info is not None:
            for text in (query, candidate):
                info = self.text_info(text)
                if info.coverage < self.min_coverage:
                    return Verdict(False, "unrepresentable", f"coverage {info.coverage:.2f}")
                if getattr(info, "truncated", False):
                    return Verdict(False, "truncated")
        nq, nc = _merge_numbers(q.numbers, query_nlp), _merge_numbers(c.numbers, candidate_nlp)
        # "2nd" and "second" name the same position: an ordinal in digits matches one in words.
        same_position = {f"{o:g}" for o in q.ordinals & c.ordinals}
        nq, nc = nq - same_position, nc - same_position
        if nq != nc and _numbers_matter(q, c, nq, nc):
            return Verdict(False, "number_mismatch", f"{sorted(nq)} vs {sorted(nc)}")
        if q.ordinals and c.ordinals and q.ordinals != c.ordinals:
            return Verdict(False, "ordinal_mismatch", f"{sorted(q.ordinals)} vs {sorted(c.ordinals)}")
        if q.units and c.units and not q.units & c.units:
            return Verdict(False, "unit_mismatch", f"{sorted(q.units)} vs {sorted(c.units)}")
        neg = _negation_difference(q, c, query_nlp, candidate_nlp)
        if neg:
            return Verdict(False, "negation_mismatch", neg)
        pair = _antonym_pair(q, c)
        if pair:
            return Verdict(False, "antonym", f"{pair[0]} / {pair[1]}")
        if _swapped(q, c):
            return Verdict(False, "swapped_roles")
        ent = self._entity_difference(q, c, query_nlp, candidate_nlp)
        if ent:
            return Verdict(False, "entity_mismatch", ent)
        return Verdict(True, "ok")

    def same_question(self, a: str, b: str) -> bool:
        """Do two stored questions use the same content words (ignoring function words, inflection,
        order and casing)? Two such entries are one question stored twice: if both may answer a
        query, the cache holds two answers to it and should not pick one by a cosine difference."""
        x, y = _analyze(a), _analyze(b)
        return x.content == y.content and x.zh_content == y.zh_content

    # -- entity rule ---------------------------------------------------------------

    def _entity_difference(self, q: _Analysis, c: _Analysis, q_nlp: Any, c_nlp: Any) -> str:
        eq = q.entities | _nlp_entities(q_nlp)
        ec = c.entities | _nlp_entities(c_nlp)
        only_q = {e for e in eq if not _covered(e, c)}
        only_c = {e for e in ec if not _covered(e, q)}
        if only_q and only_c or self.one_sided_entities and (only_q or only_c):
            return f"{sorted(only_q)} vs {sorted(only_c)}"
        # Chinese: the content characters each side has and the other lacks (北京 vs 上海).
        zq, zc = q.zh_content - c.zh_content, c.zh_content - q.zh_content
        if zq and zc:
            return f"{''.join(sorted(zq))} vs {''.join(sorted(zc))}"
        return ""


def _merge_numbers(numbers: tuple[str, ...], nlp: Any) -> frozenset[str]:
    out = set(numbers)
    for n in getattr(nlp, "numbers", None) or ():
        out.add(_canon_number(str(n)))
    return frozenset(out)


def _numbers_matter(q: _Analysis, c: _Analysis, nq: frozenset[str], nc: frozenset[str]) -> bool:
    """Different numbers reject, except a count spelled out on one side only ("two essential
    elements" vs "the elements ... and ..."): a number written in digits always counts."""
    if nq and nc:
        return True
    one = q if nq else c
    return one.digit_numbers


def _negation_difference(q: _Analysis, c: _Analysis, q_nlp: Any, c_nlp: Any) -> str:
    """Non-empty when exactly one text negates what the other asserts.

    Each explicit cue ("not", "without", "n't", "non-") negates the next content word. When one
    text has cues and the other none, the pair is rejected if a negated word occurs in the other
    text ("Can dogs eat chocolate?" / "Can dogs not eat chocolate?"). A negated word the other text
    does not use is read as the same meaning put another way ("not mandatory" / "optional"), and
    negation by meaning ("in the absence of", "avoid", "non-...") counts as negation on either side.
    Chinese negation (not parsed for scope) and negations reported by an NLP analysis reject
    whenever the other side has no negation at all.
    """
    nlp_q, nlp_c = bool(getattr(q_nlp, "negations", None)), bool(getattr(c_nlp, "negations", None))
    neg_q = bool(q.neg_scopes) or q.implicit_neg or nlp_q
    neg_c = bool(c.neg_scopes) or c.implicit_neg or nlp_c
    if neg_q == neg_c:
        return ""
    n, p, n_nlp = (q, c, nlp_q) if neg_q else (c, q, nlp_c)
    if n_nlp and not n.neg_scopes and not n.implicit_neg:
        return "negated (nlp)"
    if n.cjk and _zh_negated(n.cjk) and not _zh_negated(p.cjk):
        return "negated (zh)"
    lessened = _lessened(p)
    for scope in n.neg_scopes:
        if scope in lessened:  # "not as exact" / "less exact": the same comparison, not a contradiction
            continue
        if scope is None or scope in p.stem_set or scope in p.squashed:
            return f"negated {scope!r}"
    return ""


def _lessened(a: _Analysis) -> set[str]:
    """Stems of the words a text qualifies with "less" or "fewer" ("less exact" -> "exact")."""
    return {a.stems[i + 1] for i, w in enumerate(a.words[:-1]) if w in ("less", "fewer")}


def _nlp_entities(nlp: Any) -> set[str]:
    out: set[str] = set()
    for e in getattr(nlp, "entities", None) or ():
        text = e.get("text") if isinstance(e, dict) else getattr(e, "text", None)
        label = e.get("label") if isinstance(e, dict) else getattr(e, "label", None)
        if text and label not in ("CARDINAL", "ORDINAL", "QUANTITY", "PERCENT", "MONEY", "DATE", "TIME"):
            out.add(str(text).lower())
    return out


def _antonym_pair(q: _Analysis, c: _Analysis) -> tuple[str, str] | None:
    only_q, only_c = q.word_set - c.word_set, c.word_set - q.word_set
    for w in only_q:
        opposites = _ANTONYM_MAP.get(w)
        if opposites and opposites & only_c:
            return w, next(iter(opposites & only_c))
        for p in _NEG_PREFIXES:  # able / unable, like / dislike, useful / useless
            if p + w in only_c and _stem(w) not in q.neg_scopes:
                return w, p + w
            if w.startswith(p) and len(w) - len(p) >= 3 and w[len(p):] in only_c and _stem(w[len(p):]) not in c.neg_scopes:
                return w, w[len(p):]
        if w.endswith("ful") and w[:-3] + "less" in only_c:
            return w, w[:-3] + "less"
        if w.endswith("less") and w[:-4] + "ful" in only_c:
            return w, w[:-4] + "ful"
    if q.cjk and c.cjk:
        for a, b in _ZH_ANTONYMS:
            for x, y in ((a, b), (b, a)):
                if x in q.cjk and x not in c.cjk and y in c.cjk and y not in q.cjk:
                    return x, y
    return None


_NEAR = 2  # content words looked at on each side of a direction marker
_EN_MARKERS = frozenset(("to", "into", "than", "in", "per", "->", "→", "towards", "toward"))
_COMPARATIVE = frozenset({"more", "less", "better", "worse", "rather"})


def _is_comparative(w: str) -> bool:
    return w in _COMPARATIVE or (len(w) > 4 and w.endswith("er") and w.isalpha())


def _marker_sides(a: _Analysis) -> list[tuple[str, list[str], list[str]]]:
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


def _en_swapped(q: _Analysis, c: _Analysis) -> bool:
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


def _zh_sides(cjk: str) -> tuple[set[str], set[str]] | None:
    best = -1
    for m in _ZH_DIRECTION:
        i = cjk.rfind(m)
        if i > 0:
            best = max(best, i) if best >= 0 else i
            if best == i:
                marker = m
    if best <= 0:
        return None
    left = {ch for ch in cjk[:best] if ch not in _ZH_FUNCTION}
    right = {ch for ch in cjk[best + len(marker) :] if ch not in _ZH_FUNCTION}
    return left, right


def _swapped(q: _Analysis, c: _Analysis) -> bool:
    if _en_swapped(q, c):
        return True
    for sq, sc in ((_zh_sides(q.cjk), _zh_sides(c.cjk)),):
        if sq is None or sc is None:
            continue
        (lq, rq), (lc, rc) = sq, sc
        crossed_l, crossed_r = lq & rc, rq & lc
        if crossed_l and crossed_r:  # words changed sides both ways
            return True
        # The same two sides, one of them emptied by rewording: "X to Y" vs "Y to X" still crosses one way.
        if (crossed_l or crossed_r) and not (lq & lc) and not (rq & rc):
            return True
    return False


def lexical_overlap(a: str, b: str) -> float:
    """Dice coefficient of the two texts' content-word stems (0..1; 1.0 when neither has any).

    Used to break near-ties between stored questions that embed almost equally close to a query.
    """
    x, y = _analyze(a), _analyze(b)
    cx, cy = x.content | x.zh_content, y.content | y.zh_content
    if not cx and not cy:
        return 1.0
    return 2 * len(cx & cy) / (len(cx) + len(cy))
