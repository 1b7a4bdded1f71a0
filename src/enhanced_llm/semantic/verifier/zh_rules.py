"""Chinese closed classes the verifier compares exactly (the counterpart of :mod:`.en_rules`).

* **relative time** (:func:`relative_times`): 今天 明天 昨天 后天 前天 今晚 明早..., 今年 去年 明年
  前年 后年, 这/本/上/下/上上/下下 + 周 周末 星期 礼拜 个月 月 季度 学期 (下周一: the week and the
  day), and the time of day (早上 = 早晨 = 上午, 中午, 下午, 傍晚, 晚上 = 夜里). 这周末 is ``weekend0``,
  下周末 ``weekend+1``; offset 0 is the present, what a question means when it says nothing.
* **periods and fractions** (:func:`periods`): 一季度 / 第一季度 / Q1 -> Q1, 上半年 -> H1, 下半年 -> H2,
  一半 -> 1/2, 三分之一 -> 1/3, 四分之三 -> 3/4.
* **measure dimension** (:func:`dimensions`): 多重 -> weight, 多贵 / 多少钱 -> price, 多久 / 多长时间 /
  几天 -> duration, 多长 / 多远 / 距离 -> length, 多高 -> height, 多大 -> size or age...
* **quantities** (:func:`quantities`): 半小时 = 30分钟, 半年 = 六个月 (time units as seconds).
* **order tokens** (:func:`order_tokens`) and the word lists of :mod:`.roles` for Chinese.
"""

from __future__ import annotations

import re

from enhanced_llm.semantic.verifier.memo import memo
from enhanced_llm.semantic.verifier.zh import _dictionary, numeral_value

__all__ = ["dimensions", "order_tokens", "periods", "quantities", "relative_times",
           "ORDER_DROP", "ORDER_SYMMETRIC", "ORDER_PASSIVE", "ROLE_CONFLICTS"]

_NUM = "零〇一二两三四五六七八九十百千万亿"
_DAY_WORDS = {
    "今天": ("day0",), "今日": ("day0",), "明天": ("day+1",), "明日": ("day+1",), "后天": ("day+2",),
    "大后天": ("day+3",), "昨天": ("day-1",), "昨日": ("day-1",), "前天": ("day-2",), "大前天": ("day-3",),
    "今晚": ("day0", "night"), "明晚": ("day+1", "night"), "昨晚": ("day-1", "night"), "今早": ("day0", "morning"),
    "明早": ("day+1", "morning"), "今年": ("year0",), "明年": ("year+1",), "后年": ("year+2",), "去年": ("year-1",),
    "前年": ("year-2",), "今明两天": ("day0", "day+1"),
}
_DAY_RE = re.compile("|".join(sorted(_DAY_WORDS, key=len, reverse=True)))
_PREFIX = {"上上": -2, "下下": 2, "上": -1, "下": 1, "这": 0, "本": 0, "今": 0}
_SPAN = {"周末": "weekend", "周": "week", "星期": "week", "礼拜": "week", "月": "month", "季度": "quarter", "学期": "semester"}
_WEEKDAY = {"一": 1, "二": 2, "三": 3, "四": 4, "五": 5, "六": 6, "日": 7, "天": 7, "末": 0}
_REL_RE = re.compile(
    r"(?<![一以之往向地底楼线手身马])(上上|下下|上|下|这|本)(个)?(周末|周|星期|礼拜|月|季度|学期)([一二三四五六日天](?![次遍回个]))?"
)
_WEEKDAY_RE = re.compile(r"(?<![一二三四五六七八九十两几每上下这本\d])(周|星期|礼拜)([一二三四五六日天末])(?![次遍回个天])")
_TIME_OF_DAY = {"早上": "morning", "早晨": "morning", "清晨": "morning", "上午": "morning", "中午": "noon",
                "下午": "afternoon", "傍晚": "dusk", "晚上": "night", "夜里": "night", "夜晚": "night", "凌晨": "small_hours",
                "半夜": "small_hours", "深夜": "small_hours"}
_TOD_RE = re.compile("|".join(_TIME_OF_DAY))


def relative_times(text: str) -> frozenset[str]:
    """Relative dates and times of day of ``text`` as tokens ("day+1", "weekend0", "week-1", "dow6", "night")."""
    out: set[str] = set()
    for m in _DAY_RE.finditer(text):
        out.update(_DAY_WORDS[m.group()])
    for m in _REL_RE.finditer(text):
        prefix, _, span, day = m.groups()
        if prefix in ("上", "下") and span == "月" and m.group(2) is None and text[m.end() : m.end() + 1].isdigit():
            continue  # 上月3号 reads fine, but 下月 alone is rare enough to keep; digits after: a date
        offset = _PREFIX[prefix]
        kind = _SPAN[span]
        if day and kind == "week":
            if _WEEKDAY[day]:
                out.add(f"dow{_WEEKDAY[day]}")
            else:
                kind = "weekend"
        out.add(f"{kind}{offset:+d}".replace("+0", "0"))
    for m in _WEEKDAY_RE.finditer(text):
        d = _WEEKDAY[m.group(2)]
        out.add(f"dow{d}" if d else "weekend")
    if "周末" in text and not any(t.startswith("weekend") for t in out):
        out.add("weekend")
    for m in _TOD_RE.finditer(text):
        out.add(_TIME_OF_DAY[m.group()])
    return frozenset(out)


def present(token: str) -> bool:
    """Is the token the present (今天, 这周, 今年) or a bare span (周末): what is meant by default?"""
    return (token.endswith("0") and not token.endswith(("+0", "-0"))) or token == "weekend"


_FRACTION_RE = re.compile(rf"([{_NUM}\d]+)分之([{_NUM}\d]+)")
_QUARTER_RE = re.compile(r"(?:第)?([一二三四1-4])季度|[Qq]([1-4])(?![0-9])")
_HALF_YEAR = {"上半年": "H1", "前半年": "H1", "下半年": "H2", "后半年": "H2", "上半场": "half1", "下半场": "half2",
              "上半月": "halfmonth1", "下半月": "halfmonth2"}
_HALF_RE = re.compile("|".join(_HALF_YEAR))


def _value(run: str) -> float:
    try:
        return float(run)
    except ValueError:
        return numeral_value(run)


def periods(text: str) -> frozenset[str]:
    """Quarters (Q1-Q4), halves of a year or game (H1, H2), and fractions (1/2, 1/3, 3/4)."""
    out: set[str] = set()
    for m in _QUARTER_RE.finditer(text):
        n = int(_value(m.group(1) or m.group(2)))
        first = m.start() and text[m.start() - 1] in "前头" and m.group(1)  # 前三季度: Q1 to Q3
        out.add(f"Q1-Q{n}" if first else f"Q{n}")
    for m in _HALF_RE.finditer(text):
        out.add(_HALF_YEAR[m.group()])
    for m in _FRACTION_RE.finditer(text):
        out.add(f"{_value(m.group(2)):g}/{_value(m.group(1)):g}")
    if "一半" in text:
        out.add("1/2")
    return frozenset(out)


def mask_fractions(text: str) -> str:
    """``text`` with its fractions (三分之一) blanked: they are not two numbers each."""
    return _FRACTION_RE.sub(lambda m: "　" * len(m.group()), text)


_DIMS = [
    (r"多重|多沉|重量|体重|多少斤|多少公斤|多少克|几斤|几公斤|几克|多少吨", ("weight",)),
    (r"多贵|多少钱|价格|价钱|费用|花多少|几块钱|多少元|多少块|贵不贵", ("price",)),
    (r"多久|多长时间|多少时间|多少天|几天|几个小时|几小时|多少小时|几分钟|多少分钟|几周|几个星期|几年|多少年|几个月|多少个月",
     ("duration", "age")),
    (r"多长(?!时间)|长度|多远|距离|多少米|多少公里|几公里|几米|多少千米", ("length",)),
    (r"几点|什么时间|什么时候", ("clock",)),
    (r"多高|高度|身高|海拔", ("height",)),
    (r"多宽|宽度", ("width",)),
    (r"多快|速度|时速|多少迈", ("speed",)),
    (r"多大年纪|几岁|多少岁|年龄|岁数|多老|多古老|多少年历史", ("age",)),
    (r"多大", ("size", "age")),
    (r"面积|多少平|多少亩|多少平方", ("size",)),
    (r"多深|深度", ("depth",)),
    (r"多厚|厚度", ("thickness",)),
    (r"多少度|温度|几度", ("temperature",)),
]
_DIM_RES = [(re.compile(p), d) for p, d in _DIMS]


def dimensions(text: str) -> frozenset[str]:
    """What a measure question asks for (empty when it is not one)."""
    out: set[str] = set()
    for rx, dims in _DIM_RES:
        if rx.search(text):
            out.update(dims)
            text = rx.sub("　", text)  # 多大年纪 is an age, not also a size
    return frozenset(out)


def word_dims(word: str) -> frozenset[str]:
    """The dimension a word of a measure question names (大 of 多大, 天 of 几天, 多久, 高度)."""
    if not word or not "\u4e00" <= word[0] <= "\u9fff":
        return frozenset()
    return dimensions(word) | dimensions("多" + word) | dimensions("几" + word) | dimensions("多少" + word)


_TIME_UNITS = {"秒": 1, "秒钟": 1, "分钟": 60, "小时": 3600, "钟头": 3600, "天": 86400, "日": 86400, "周": 604800,
               "星期": 604800, "个星期": 604800, "礼拜": 604800, "个月": 2628000, "月": 2628000, "年": 31536000,
               "公斤": 1000, "千克": 1000, "斤": 500, "克": 1, "公里": 1000, "千米": 1000, "米": 1}
UNIT_WORDS = frozenset(_TIME_UNITS) | {"小时"}
_KIND = {u: ("m" if u in ("公斤", "千克", "斤", "克") else "l" if u in ("公里", "千米", "米") else "t") for u in _TIME_UNITS}
_QTY_RE = re.compile(rf"(\d+(?:\.\d+)?|[{_NUM}]+|半)(个)?(半)?(" + "|".join(sorted(_TIME_UNITS, key=len, reverse=True)) + ")(半)?")


def quantities(text: str) -> frozenset[tuple[tuple[str, ...], str, float]]:
    """(numbers as the numbers rule writes them, kind, amount in the base unit): 半小时 = 30分钟 = 1800 s,
    半年 = 六个月, 一个半小时 = 5400 s. Kind "t" time, "m" mass, "l" length."""
    out: set[tuple[tuple[str, ...], str, float]] = set()
    for m in _QTY_RE.finditer(text):
        run, ge, mid_half, unit, half = m.groups()
        half = half or mid_half  # 一个半小时, 三天半
        if ge and unit in ("月", "星期"):
            unit = "个" + unit
        if unit == "年" and len(run) == 4 and not ge:
            continue  # 2008年: a calendar year, not an amount
        value = 0.5 if run == "半" else _value(run)
        numbers = ("1" if run == "一" else f"{value:g}",) + (("0.5",) if half else ())
        if half:
            value += 0.5
        out.add((numbers, _KIND[unit], round(value * _TIME_UNITS[unit], 6)))
    return frozenset(out)


_ORDER_NORM = {"可以": "能", "能够": "能", "可": "能", "需要": "要", "得": "要", "应该": "要", "与": "和", "跟": "和",
               "同": "和", "以及": "和", "及": "和", "或者": "或", "还是": "或"}


def order_tokens(words: tuple[str, ...]) -> tuple[str, ...]:
    """jieba's words in order, modal verbs and conjunctions written one way (可以 = 能, 跟 = 和), a
    compound of two dictionary words cut in two (员工工资 -> 员工 工资: the 员工 of 拖欠员工工资)."""
    out: list[str] = []
    for w in words:
        parts = split_word(w)
        out += list(parts) if parts else [_ORDER_NORM.get(w, w)]
    return tuple(out)


_GLUED_MARKERS = frozenset("兑比到给对向从把被")


@memo()
def split_word(w: str) -> tuple[str, ...] | None:
    """A word jieba glued together from two words (员工工资 -> 员工 工资) or from a word and a relation
    marker (美元兑 -> 美元 兑); None for any other word."""
    freq = _dictionary()
    if len(w) == 4 and freq.get(w[:2], 0) >= 1000 and freq.get(w[2:], 0) >= 1000:
        return (w[:2], w[2:])
    if len(w) >= 3 and w[-1] in _GLUED_MARKERS and freq.get(w[:-1], 0) >= 1000:
        return (w[:-1], w[-1])
    if len(w) >= 3 and w[0] in _GLUED_MARKERS and freq.get(w[1:], 0) >= 1000 and freq.get(w, 0) < 1000:
        return (w[0], w[1:])
    return None


ORDER_DROP = frozenset("了 着 过 啊 吧 呢 吗 呀 么 请问 请 一下 ， , 、 ？ ? 。".split())
ORDER_SYMMETRIC = frozenset("和 或 还是 、 对比 比较 相比 vs VS".split())
ORDER_PASSIVE = frozenset("被 让 叫 由".split())
ORDER_LOOSE = frozenset("都 也 就 会 要 能".split())
ROLE_CONFLICTS = frozenset({("给", "向"), ("给", "从"), ("给", "和"), ("到", "从"), ("去", "从"), ("往", "从"),
                            ("至", "从"), ("飞", "从")})
