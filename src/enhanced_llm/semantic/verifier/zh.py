"""Chinese facts for the verifier, from jieba's segmentation and part-of-speech tags.

:func:`zh_facts` reads a text's Chinese part once (cached with the rest of the
analysis) and returns what the rules compare:

* **numbers** in Chinese numerals (一 二 两 十 百 千 万 亿, 半 = 0.5; years read
  digit by digit: 二零二三年 = 2023) and **ordinals** (第二, 第2); a numeral inside
  a lexical word (三亚, 三国演义, 二战, 万一, 一样) is not a number, and a lone 一
  before a measure word (一天, 一下) is a *weak* number: a count said on one side only;
* **units** that follow a number (公斤, 斤, 克, 两 after a number, 米, 公里, 小时, 天, 个月...);
* **negation** (不 没 没有 别 未 非 无 勿 莫, also inside words: 不含, 未满, 非会员), with the
  words that only look negated (别人, 无锡, 非常, 无论, 未来, 非洲...) and A不A questions
  (能不能, 可不可以, 是不是) removed;
* **entities**: words jieba tags as person (nr), place (ns), organisation (nt) or other proper noun (nz);
* **dates**: relative day, month and year words (今天, 明年, 上个月, 周六...);
* **content** words: everything that is not a function word, a numeral or a negation;
* **sides** of a direction marker (A比B, 从A到B, 把A换成B, A翻译成B) for the swap rule.

The antonym table (打开/关闭, 删除/恢复, 增加/减少, 沸点/冰点, 买/卖, 前/后...) works on
words, and on single characters in the same place of two words that differ in that
place only (饭前/饭后, 调大/调小, 左转/右转).
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from typing import Any

from enhanced_llm.errors import MissingDependencyError

__all__ = ["ZhFacts", "zh_facts", "zh_antonym", "zh_swapped", "zh_text_antonym", "CJK_RE", "to_simplified", "warm_up"]

CJK_RE = re.compile(r"[\u4e00-\u9fff]")

_DIGITS = {"零": 0, "〇": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8, "九": 9}
_MULTIPLIERS = {"十": 10, "百": 100, "千": 1000, "万": 10_000, "亿": 100_000_000}
_NUMERAL_RE = re.compile(r"(第?)([零〇一二两三四五六七八九十百千万亿]+|半)")
_NUMERAL_CHAR_RE = re.compile(r"[零〇一二两三四五六七八九十百千万亿半\d]")
_YEAR_RE = re.compile(r"[零〇一二三四五六七八九]{4}(?=年)")
# Measure words and units: a lone numeral before one of them is a number (三个, 五年), not part of a word.
_MEASURE = frozenset("个只本次年月日天号岁元块米斤克两度倍人位条张件页章节点分秒周时里层种部台辆杯碗名级集季步环升毫楼届场双")
_UNITS = (
    "公斤", "千克", "毫克", "克", "斤", "两", "吨", "公里", "千米", "英里", "厘米", "毫米", "米", "毫升", "升", "杯",
    "小时", "分钟", "秒", "天", "周", "星期", "个月", "月", "年", "岁", "平米", "平方米", "度", "元", "块", "美元",
    "磅", "盎司", "英寸", "英尺", "加仑", "摄氏度", "华氏度", "亩", "公顷", "平方公里", "平方千米", "英亩",
)
_UNIT_RE = re.compile(r"(?:\d+(?:\.\d+)?|[零〇一二两三四五六七八九十百千万亿半]+)\s*(?:个)?(" + "|".join(_UNITS) + ")")
_NEG_CHARS = "不没别未非无勿莫"
_EVERY_RE = re.compile(r"每(?:个)?[天日月年周次人顿餐]")
# Words with a numeral that count nothing.
_NOT_NUMBERS = frozenset("十分 万一 一样 一起 一下 一直 一定 一般 统一 唯一 一切 一些 一点 一会 一边 一旦 一致 一共 第一时间".split())
# Words that contain a negation character without negating.
_NEG_FALSE = (
    "非常", "无论", "不过", "不仅", "不断", "除非", "不少", "毫无疑问", "莫名", "别人", "别的", "别墅", "告别", "区别",
    "特别", "分别", "级别", "类别", "性别", "识别", "无锡", "未来", "非洲", "无聊", "不错", "不久", "不同", "无数",
    "莫斯科", "并非不", "差不多", "不得不", "无线", "有线", "没事",
)
_A_NOT_A_RE = re.compile(r"(.)不\1")  # 能不能, 是不是, 好不好: a question, not a negation
_A_NOT_AB_RE = re.compile(r"可不可|会不会|要不要|有没有")
_A_NOT_A_QUESTION_RE = re.compile(r"(.)[不没]\1")  # 能不能 -> 能: the question form, read for content words
_ENTITY_FLAGS = frozenset({"nr", "nrfg", "nrt", "ns", "nt", "nz"})
_DATE_WORDS = frozenset(
    """今天 明天 昨天 后天 前天 今晚 明晚 昨晚 今年 明年 去年 前年 后年 本月 这个月 上个月 下个月 本周 这周 上周 下周
    周一 周二 周三 周四 周五 周六 周日 周末 星期一 星期二 星期三 星期四 星期五 星期六 星期日 星期天 早上 晚上 中午 下午 上午""".split()
)
# Function words: not "content" when comparing what two questions do not share.
_FUNCTION = frozenset(
    """的 了 吗 呢 吧 啊 呀 么 是 在 有 和 与 及 或 就 都 也 还 又 很 太 更 请 问 请问 我 你 他 她 它 我们 你们 他们 这 那 哪
    这个 那个 哪个 哪些 些 个 种 样 怎 怎么 怎样 怎么样 如何 什么 为什么 为何 能 会 可以 能够 可 要 想 应该 该 需要 得 把 被
    给 让 从 到 对 对于 关于 其 其中 之 而 而且 并 等 着 过 地 一下 嘛 哦 嗯 您 咱 啥 多少 几 多 如果 因为 所以 但是 但 用
    来 去 做 说 讲 告诉 介绍 解释 比较 哪里 哪儿 谁 时候 什么样 一些 有没有 是不是 能不能 可不可以 会不会 要不要 好不好
    呢 啦 嘞 吗 怎么办 怎么样 咋 咋办 最好 一般 通常 到底 究竟 还是 或者 以及 一个 一种 有些 这样 那样 方法 办法 做法 方式 意思 一共 总共 怎样才能 才能 才
    麻烦 帮 帮我 帮忙 请教 劳驾 谢谢 想问 问问 想知道 知道 一下子 下 里 上 中 是否""".split()
)
_DIRECTION_MARKERS = ("转换成", "转换为", "换算成", "换算为", "翻译成", "翻译为", "转成", "转为", "换成", "变成", "译成", "改成", "比", "到")
_ANTONYM_WORDS = [
    ("增加", "减少"), ("增长", "下降"), ("上升", "下降"), ("上涨", "下跌"), ("提高", "降低"), ("升高", "降低"), ("增加", "减轻"),
    ("买入", "卖出"), ("借入", "借出"), ("上传", "下载"), ("加密", "解密"), ("压缩", "解压"), ("打开", "关闭"), ("开启", "关闭"),
    ("删除", "恢复"), ("添加", "删除"), ("开始", "结束"), ("启用", "禁用"), ("安装", "卸载"), ("登录", "退出"), ("加入", "退出"),
    ("关注", "取消关注"), ("接受", "拒绝"), ("支持", "反对"), ("喜欢", "讨厌"), ("升序", "降序"), ("导入", "导出"),
    ("输入", "输出"), ("盈利", "亏损"), ("以前", "以后"), ("之前", "之后"), ("优点", "缺点"), ("好处", "坏处"),
    ("简单", "复杂"), ("容易", "困难"), ("安全", "危险"), ("成功", "失败"), ("沸点", "冰点"), ("暖和", "凉快"),
    ("进口", "出口"), ("升级", "降级"), ("收", "寄"), ("买", "卖"), ("租", "出租"), ("有线", "无线"), ("含糖", "无糖"),
    ("成年人", "未成年人"), ("借给", "借"),
]
_ANTONYM_CHARS = [
    "大小", "高低", "上下", "前后", "多少", "长短", "快慢", "早晚", "冷热", "新旧", "好坏", "好差", "胖瘦", "增减", "升降",
    "涨跌", "开关", "进出", "左右", "东西", "南北", "男女", "输赢", "胜负", "正负", "加减", "收发", "难易", "真假", "对错",
    "内外", "深浅", "远近", "宽窄", "厚薄", "轻重", "强弱", "买卖", "来去", "借还", "冷暖", "热冷", "入出",
]


def _pairs(items: list[tuple[str, str]]) -> dict[str, set[str]]:
    table: dict[str, set[str]] = {}
    for a, b in items:
        table.setdefault(a, set()).add(b)
        table.setdefault(b, set()).add(a)
    return table


_ANTONYM_TABLE = _pairs(_ANTONYM_WORDS)
_CHAR_TABLE = _pairs([(p[0], p[1]) for p in _ANTONYM_CHARS])


@dataclass(frozen=True, slots=True)
class ZhFacts:
    """What the rules compare in a text's Chinese part."""

    words: tuple[str, ...]
    content: frozenset[str]
    content_words: tuple[str, ...]  # the content words in text order (of the statement form of A不A questions)
    actions: frozenset[str]  # content words jieba tags as verbs or directions (取消, 出租, 右): what is done, or where
    verbs: frozenset[str]  # the actions jieba tags as verbs (not directions or times)
    numbers: tuple[str, ...]
    weak_numbers: frozenset[str]  # numbers from a lone 一 + measure word ("一天"): a count said on one side only
    ordinals: frozenset[int]
    units: frozenset[str]
    negated: bool
    entities: frozenset[str]
    dates: frozenset[str]
    sides: tuple[tuple[str, ...], tuple[str, ...]] | None  # content words left and right of a direction marker


_jieba_lock = threading.Lock()
_pseg: Any = None


def _posseg() -> Any:
    global _pseg
    if _pseg is None:
        with _jieba_lock:
            if _pseg is None:
                try:
                    import jieba
                    import jieba.posseg as pseg
                except ImportError as exc:
                    raise MissingDependencyError("jieba", "Chinese verification rules", extra="semantic") from exc
                jieba.setLogLevel(60)
                pseg.lcut("预热")  # loads the dictionary (~1 s): not on a request's path when warmed up
                _pseg = pseg
    return _pseg


def _dictionary() -> Any:
    """jieba's word -> frequency table (loaded with the tokenizer)."""
    _posseg()
    import jieba

    return jieba.dt.FREQ


def warm_up() -> None:
    """Load jieba's dictionary now (call off the event loop at start)."""
    _posseg()
    to_simplified("預熱")


_opencc: Any = None


def to_simplified(text: str) -> str:
    """``text`` in simplified characters (OpenCC ``t2s``; unchanged without the ``opencc`` package):
    jieba's dictionary and Cilin are simplified, and 電腦 is the same question as 电脑."""
    global _opencc
    if _opencc is None:
        with _jieba_lock:
            if _opencc is None:
                try:
                    import opencc

                    _opencc = opencc.OpenCC("t2s")
                except Exception:  # noqa: BLE001 - not installed or no data: texts stay as written
                    _opencc = False
    return _opencc.convert(text) if _opencc else text


def numeral_value(run: str) -> float:
    """Value of a Chinese numeral run: 二十三 = 23, 两千 = 2000, 一万五千 = 15000, 半 = 0.5."""
    if run == "半":
        return 0.5
    total, section, digit = 0, 0, 0
    for ch in run:
        if ch in _DIGITS:
            digit = _DIGITS[ch]
        else:
            unit = _MULTIPLIERS[ch]
            if unit >= 10_000:
                total += (section + digit) * unit
                section = digit = 0
            else:
                section += (digit or 1) * unit
                digit = 0
    return float(total + section + digit)


def _numbers(cjk: str, words: list[tuple[str, str]], text: str) -> tuple[list[str], set[str], set[int]]:
    """Numbers, weak numbers and ordinals of the Chinese text ``cjk`` (of ``text``) segmented as ``words``."""
    numbers: list[str] = []
    weak: set[str] = set()
    ordinals: set[int] = set()
    for m in _YEAR_RE.finditer(cjk):  # 二零二三年
        numbers.append(str(int("".join(str(_DIGITS[c]) for c in m.group()))))
    masked = _YEAR_RE.sub("年", cjk)
    pos = 0
    for word, flag in words:
        start = masked.find(word, pos) if word else -1
        if start < 0:
            continue
        pos = start + len(word)
        if word in _NOT_NUMBERS:
            continue
        lexical = flag not in ("m", "mq", "q", "t") and not word.startswith("第")
        for m in _NUMERAL_RE.finditer(word):
            ordinal, run = m.group(1), m.group(2)
            rest = masked[start + m.end() :]
            counted = rest[:1] in _MEASURE or rest.startswith(_UNITS)
            # A numeral inside a lexical word (三亚, 二战) is not a number, unless it counts something
            # (半小时, tagged as a word); adverbs like 十分 ("very") never are.
            if (lexical and not (counted and m.start() == 0 and flag != "d")) or (
                len(run) == 1 and not ordinal and not counted
            ):
                continue  # part of a word (三亚, 一样, 万一), or a lone numeral with nothing counted
            value = numeral_value(run)
            if ordinal:
                ordinals.add(int(value))
            elif run == "一":
                weak.add("1")
            else:
                numbers.append(f"{value:g}")
    for m in re.finditer(r"第\s*(\d+)", text):
        ordinals.add(int(m.group(1)))
    if _EVERY_RE.search(cjk):
        weak.add("1")  # 每天 = 一天 (a rate): the same count as a lone 一 before a measure word
    return numbers, weak, ordinals


def _negated(text: str) -> bool:
    s = _A_NOT_AB_RE.sub("", _A_NOT_A_RE.sub("", text))
    for w in _NEG_FALSE:
        s = s.replace(w, "")
    return any(ch in s for ch in _NEG_CHARS)


def _sides(content_words: list[str], words: list[str]) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
    """Content words before and after the last direction marker (A比B, 从A到B, 把A换成B), found in
    the joined text, since jieba may split a marker (翻译/成)."""
    joined = "".join(words)
    starts, pos = [], 0
    for w in words:
        starts.append(pos)
        pos += len(w)
    content = set(content_words)
    for marker in _DIRECTION_MARKERS:
        at = joined.rfind(marker)
        if at <= 0:
            continue
        end = at + len(marker)
        # A word jieba glued to the marker (换算/成磅) keeps its part beyond the marker.
        left = tuple(w if st + len(w) <= at else w[: at - st] for w, st in zip(words, starts) if st < at and w in content)
        right = tuple(
            w if st >= end else w[end - st :] for w, st in zip(words, starts) if st + len(w) > end and (w in content or st < end)
        )
        right = tuple(w for w in right if w and not w.isspace())
        if left and right:
            return left, right
    return None


# Modal verbs and particles jieba's HMM glues to the next or previous character (能充, 了能).
_GLUE_BEFORE = frozenset("能会要可了就都也还很")
_GLUE_AFTER = frozenset("了的得吗呢吧")
_RARE = 500  # jieba dictionary frequency below which a word starting with a modal is read as glued
_ACTION_FLAGS = frozenset({"v", "vd", "vg", "f", "t"})  # verbs, directions, times
_QUESTION_PREFIX_RE = re.compile(r"^(?:几|多少)(?=[\u4e00-\u9fff])")  # 几天 -> 天, 多少钱 -> 钱


def _unglue(word: str) -> str:
    """A word jieba made up (not in its dictionary) from a function character and a content word:
    the content word (能充 -> 充, 了能 -> 能); any other word as it is."""
    if len(word) < 2 or not CJK_RE.match(word):
        return word
    if _QUESTION_PREFIX_RE.match(word):
        return _QUESTION_PREFIX_RE.sub("", word)  # 几天 / 多少天: the question word is no content
    if _dictionary().get(word, 0) >= _RARE:
        return word  # a word of the dictionary (能力, 会员), not one made by gluing (能充, 要花; 能带 is rare)
    while len(word) >= 2 and word[0] in _GLUE_BEFORE:
        word = word[1:]
    while len(word) >= 2 and word[-1] in _GLUE_AFTER:
        word = word[:-1]
    return word


def zh_facts(text: str) -> ZhFacts | None:
    """The Chinese facts of ``text``, or None when it has no Chinese characters."""
    if not CJK_RE.search(text):
        return None
    tagged = [(w.word, w.flag) for w in _posseg().lcut(text) if w.word.strip()]
    words = [w for w, _ in tagged]
    # Content words are read from the statement form of an A不A question (能不能 -> 能, 有没有 -> 有).
    plain = _A_NOT_A_QUESTION_RE.sub(r"\1", text.replace("可不可以", "可以"))
    plain_tagged = tagged if plain == text else [(w.word, w.flag) for w in _posseg().lcut(plain) if w.word.strip()]
    cjk = "".join(CJK_RE.findall(text))
    numbers, weak, ordinals = _numbers(cjk, tagged, text)
    units = {m.group(1) for m in _UNIT_RE.finditer(text)}
    # 别 未 非 无 勿 莫 negate at the start of a word (别吃, 未满, 非会员, 无糖), not inside one (辨别, 鉴别).
    negated = _negated("".join(w for w in words if w[0] in _NEG_CHARS or not any(ch in w for ch in "别未非无勿莫")))
    content = [
        w for w, flag in ((_unglue(w), f) for w, f in plain_tagged)
        if CJK_RE.search(w) and w not in _FUNCTION and w not in _NEG_CHARS
        and (flag not in ("m", "mq", "x", "uj", "ul", "y", "p", "c", "u") or flag == "m" and not _NUMERAL_CHAR_RE.search(w))
    ]
    # Words that can stand on either side of a direction marker: also Latin names (PDF, Word) and units (磅).
    side_words = content + [w for w, flag in tagged if flag in ("eng", "q") or (flag == "m" and w in _UNITS)]
    return ZhFacts(
        words=tuple(words),
        content=frozenset(content),
        content_words=tuple(dict.fromkeys(content)),
        actions=frozenset(u for u, flag in ((_unglue(w), f) for w, f in plain_tagged) if flag in _ACTION_FLAGS),
        verbs=frozenset(u for u, flag in ((_unglue(w), f) for w, f in plain_tagged) if flag in ("v", "vd", "vg")),
        numbers=tuple(sorted(numbers)),
        weak_numbers=frozenset(weak),
        ordinals=frozenset(ordinals),
        units=frozenset(units),
        negated=negated,
        entities=frozenset(w for w, flag in tagged if flag in _ENTITY_FLAGS and CJK_RE.search(w)),
        dates=frozenset(w for w in words if w in _DATE_WORDS),
        sides=_sides(side_words, words),
    )


def zh_antonym(only_q: set[str], only_c: set[str]) -> tuple[str, str] | None:
    """An antonym pair between the content words only one side has: a pair of the word table, or two
    words that differ in one place only, by a pair of opposite characters (饭前/饭后, 调大/调小)."""
    for w in only_q:
        opposite = _ANTONYM_TABLE.get(w)
        if opposite and opposite & only_c:
            return w, next(iter(opposite & only_c))
        for u in only_c:
            if len(u) == len(w):
                diff = [(a, b) for a, b in zip(w, u) if a != b]
                if len(diff) == 1 and diff[0][1] in _CHAR_TABLE.get(diff[0][0], ()):
                    return w, u
    return None


def zh_swapped(q: ZhFacts, c: ZhFacts) -> bool:
    """Two content words trade places across the same kind of direction marker (A比B / B比A)."""
    if q.sides is None or c.sides is None:
        return _swapped_after_from(q, c)
    (lq, rq), (lc, rc) = q.sides, c.sides
    crossed_l, crossed_r = set(lq) & set(rc), set(rq) & set(lc)
    if crossed_l and crossed_r:
        return True
    # One side reworded: "A到B" vs "B到A'" still crosses one way when nothing stayed on its side.
    return bool(crossed_l or crossed_r) and not (set(lq) & set(lc)) and not (set(rq) & set(rc))


def _swapped_after_from(q: ZhFacts, c: ZhFacts) -> bool:
    """从A飞B / 从B飞A: after 从 ("from") the same two names in the other order, whatever the verb."""
    def names_after_from(z: ZhFacts) -> list[str]:
        if "从" not in z.words:
            return []
        rest = z.words[z.words.index("从") + 1 :]
        return [w for w in rest if w in z.entities]

    nq, nc = names_after_from(q), names_after_from(c)
    return len(nq) >= 2 and len(nc) >= 2 and nq[:2] == nc[1::-1] and nq[0] != nq[1]


_LONG_ANTONYMS = [(a, {b for b in bs if len(b) >= 2}) for a, bs in _ANTONYM_TABLE.items() if len(a) >= 2]
_UNDO_NOT = frozenset("解决 解释 解答 解析 解读 解说 解脱 解放 解剖 解题 解梦 解渴 解馋 解闷 解暑 解酒 解毒 解围 解体 解散 解雇".split())


def zh_text_antonym(q_words: tuple[str, ...], c_words: tuple[str, ...]) -> tuple[str, str] | None:
    """Opposites however jieba cut the texts: a pair of the word table (two characters or more) with
    one word in each text only (上传 / 下载 where jieba read 上 / 传到), and an undoing word (解绑,
    解锁, 取消订阅) in one text where the other has what it undoes (绑定, 锁, 订阅)."""
    tq, tc = "".join(q_words), "".join(c_words)
    for a, opposites in _LONG_ANTONYMS:
        if a not in tq:
            continue
        for b in opposites:
            if b not in tc or b in tq:
                continue
            if a not in tc.replace(b, ""):  # 关注 inside 取消关注 is not 关注
                return a, b
    for this, other, other_text in ((q_words, c_words, tc), (c_words, q_words, tq)):
        this_text = "".join(this)
        for i, w in enumerate(this):
            if len(w) == 2 and w[0] == "解" and w not in _UNDO_NOT:
                done = next((u for u in other if u != w and u.startswith(w[1])), None)
                if done and done not in this_text:
                    return w, done  # 解绑 / 绑定
            if w == "取消" and i + 1 < len(this):
                target = this[i + 1]
                if len(target) >= 2 and target in other_text and "取消" not in other_text:
                    return w + target, target  # 取消订阅 / 订阅
    return None
