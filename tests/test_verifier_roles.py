"""Role swaps by word order, relative times, periods and fractions, measure dimensions
(verifier/roles.py, en_rules.py, zh_rules.py), and the reorderings that keep a question's meaning.

Examples written for these tests (not taken from the evaluation sets); rules only, no word vectors.
"""

from __future__ import annotations

import pytest

pytest.importorskip("jieba")

from enhanced_llm.semantic import Verifier  # noqa: E402
from enhanced_llm.semantic.verifier import en_rules, roles, zh_rules  # noqa: E402
from enhanced_llm.semantic.verifier.analysis import analyze  # noqa: E402


def verdict(cached: str, query: str):
    return Verifier().verify(query, cached)


@pytest.mark.parametrize(
    "a, b, reason",
    [
        # role swaps: the same words around the same relation, in each other's place
        ("Does coffee cause anxiety?", "Does anxiety cause coffee?", "swapped_roles"),
        ("How do I convert a Word file to PDF?", "How do I convert a PDF file to Word?", "swapped_roles"),
        ("Can I substitute honey for sugar?", "Can I substitute sugar for honey?", "swapped_roles"),
        ("Can I replace milk with water in pancakes?", "Can I replace water with milk in pancakes?", "swapped_roles"),
        ("How long is the flight from Tokyo to Seoul?", "How long is the flight from Seoul to Tokyo?", "swapped_roles"),
        ("What is my father's sister called?", "What is my sister's father called?", "swapped_roles"),
        ("Did Apple buy Beats?", "Did Beats buy Apple?", "swapped_roles"),
        ("How much cash can I take from the US into Mexico?", "How much cash can I take from Mexico into the US?", "swapped_roles"),
        ("Flights to Paris from Rome", "Flights from Paris to Rome", "swapped_roles"),
        # relative time
        ("Will it rain tomorrow in London?", "Will it rain today in London?", "date_mismatch"),
        ("What events are on this weekend in Berlin?", "What events are on next weekend in Berlin?", "date_mismatch"),
        ("What were the top songs of last year?", "What are the top songs of this year?", "date_mismatch"),
        ("What is on TV tonight?", "What is on TV tomorrow?", "date_mismatch"),
        ("What did the market do last week?", "What did the market do?", "date_mismatch"),
        ("What's the weather today?", "What's the weather tonight?", "date_mismatch"),
        ("Is the museum open this Saturday?", "Is the museum open next Saturday?", "date_mismatch"),
        ("What is there to do this month in Rome?", "What is there to do this year in Rome?", "date_mismatch"),
        ("How long does it take to drive to Boston?", "How far is it to drive to Boston?", "measure_mismatch"),
        ("Can a landlord sue a tenant for damages?", "Can a tenant sue a landlord for damages?", "swapped_roles"),
        # periods and fractions
        ("What were Apple's Q1 earnings?", "What were Apple's Q3 earnings?", None),
        ("How far can a car go on a quarter of a tank?", "How far can a car go on half a tank?", None),
        ("How much flour is in 1/3 cup?", "How much flour is in 1/4 cup?", "number_mismatch"),
        ("Is a quarter of an hour enough for a nap?", "Is half an hour enough for a nap?", None),
        ("Is half an hour of exercise enough?", "Is an hour of exercise enough?", "number_mismatch"),  # amounts
        ("Can I take a day off for this?", "Can I take two days off for this?", "number_mismatch"),
        ("Do two thirds of adults drink coffee?", "Do three quarters of adults drink coffee?", None),
        # measure dimension
        ("How tall is the Eiffel Tower?", "How heavy is the Eiffel Tower?", "measure_mismatch"),
        ("How heavy is an upright piano?", "How much does an upright piano cost?", "measure_mismatch"),
        ("How old is the Great Wall?", "How long is the Great Wall?", "measure_mismatch"),
        ("How far is the airport?", "How much does a taxi to the airport cost?", "measure_mismatch"),
    ],
)
def test_english_closed_classes_and_roles_refuse(a, b, reason):
    v = verdict(a, b)
    assert not v.accepted, v
    if reason:
        assert v.reason == reason, v


@pytest.mark.parametrize(
    "a, b, reason",
    [
        ("苹果比橘子甜吗", "橘子比苹果甜吗", "swapped_roles"),
        ("上海到杭州的高铁多少钱", "杭州到上海的高铁多少钱", "swapped_roles"),
        ("老师对学生说什么", "学生对老师说什么", "swapped_roles"),
        ("妈妈给女儿买什么礼物", "女儿给妈妈买什么礼物", "swapped_roles"),
        ("爷爷的弟弟怎么称呼", "弟弟的爷爷怎么称呼", "swapped_roles"),
        ("猫能吃鱼吗", "鱼能吃猫吗", "swapped_roles"),
        ("老板拖欠工人工资怎么办", "工人拖欠老板的钱怎么办", "swapped_roles"),  # 工人工资: one word for jieba
        ("借钱给同事要注意什么", "向同事借钱要注意什么", "swapped_roles"),  # 给 / 向: lend / borrow
        ("这周六北京天气怎么样", "下周六北京天气怎么样", "date_mismatch"),
        ("今天下雨吗", "今晚下雨吗", "date_mismatch"),
        ("下周三开会吗", "周三开会吗", "date_mismatch"),
        ("今年的目标是什么", "这个月的目标是什么", "date_mismatch"),
        ("人民币兑美元的汇率是多少", "美元兑人民币的汇率是多少", "swapped_roles"),  # jieba: 美元兑
        ("用蜂蜜代替白糖可以吗", "用白糖代替蜂蜜可以吗", "swapped_roles"),
        ("跑步半小时能消耗多少热量", "跑步一小时能消耗多少热量", "number_mismatch"),
        ("快递到上海要多久", "快递到上海要多少钱", "measure_mismatch"),
        ("前三季度的营收是多少", "第三季度的营收是多少", None),
        ("身高180厘米体重多少公斤合适", "身高180厘米体重多少斤合适", None),
        ("这周末杭州会下雨吗", "下周末杭州会下雨吗", "date_mismatch"),
        ("上个月的工资什么时候发", "这个月的工资什么时候发", "date_mismatch"),
        ("今年春节是几号", "明年春节是几号", "date_mismatch"),
        ("明天上午会下雨吗", "明天下午会下雨吗", "date_mismatch"),
        ("本季度的销售目标是多少", "下季度的销售目标是多少", "date_mismatch"),
        ("公司第一季度的营收是多少", "公司第三季度的营收是多少", None),
        ("公司一季度的营收是多少", "公司Q3的营收是多少", "period_mismatch"),
        ("上半年的销量怎么样", "下半年的销量怎么样", "period_mismatch"),
        ("三分之一的人会过敏吗", "三分之二的人会过敏吗", None),
        ("一半的人会过敏吗", "四分之一的人会过敏吗", None),
        ("这头大象有多重", "这头大象有多高", "measure_mismatch"),
        ("这辆车多少钱", "这辆车有多重", "measure_mismatch"),
        ("长江有多长", "长江有多宽", "measure_mismatch"),
        ("太阳有多大", "太阳离地球有多远", "measure_mismatch"),
        ("一亩地等于多少平方米", "一公顷等于多少平方米", "unit_mismatch"),
        ("怎么把照片上传到网盘", "怎么从网盘下载照片", "antonym"),  # jieba reads 上 / 传到
        ("怎么把手机号绑定到微信", "怎么解绑微信上的手机号", "antonym"),  # 解绑 undoes 绑定
    ],
)
def test_chinese_closed_classes_and_roles_refuse(a, b, reason):
    v = verdict(a, b)
    assert not v.accepted, v
    if reason:
        assert v.reason == reason, v


@pytest.mark.parametrize(
    "a, b",
    [
        # moved phrases keep the roles
        ("How do I reverse a list in Python?", "In Python, how do I reverse a list?"),
        ("How do I convert Celsius to Fahrenheit?", "Celsius to Fahrenheit: how do I convert it?"),
        ("How long does it take to fly from London to New York?", "From London to New York, how long does the flight take?"),
        ("What's the weather like in Paris today?", "Today, what's the weather like in Paris?"),
        # symmetric relations and the passive voice
        ("What's the difference between a cat and a dog?", "What's the difference between a dog and a cat?"),
        ("Which is healthier, rice or pasta?", "Which is healthier, pasta or rice?"),
        ("Can I mix vinegar with baking soda?", "Can I mix baking soda with vinegar?"),
        ("Did Federer beat Nadal in 2008?", "Was Nadal beaten by Federer in 2008?"),
        # the same closed-class value said another way
        ("What is a good gift for a ten-year-old?", "What should I get a 10 year old as a gift?"),
        ("How much does a Tesla Model 3 cost?", "What is the price of a Tesla Model 3?"),
        ("How far is the Moon from Earth?", "What is the distance between the Earth and the Moon?"),
        ("What is 20% of 150?", "What's twenty percent of 150?"),
        ("Isn't it bad to run right after eating?", "Is it bad to run right after eating?"),
        ("How many hours of sleep does a toddler need?", "How much sleep does a toddler need?"),
        ("What's on TV tonight?", "What's on TV this evening?"),
        ("How much flour is in 1/3 cup?", "How much flour is in one third of a cup?"),
        ("How far is London from Paris?", "How far is Paris from London?"),  # a distance reads either way
        ("Is a year of practice enough to learn piano?", "Is 12 months of practice enough to learn piano?"),
        ("Is it safe to give ibuprofen to a dog?", "Is it safe to give a dog ibuprofen?"),
        ("What is the distance from Paris to Lyon?", "What's the distance to Lyon from Paris?"),
    ],
)
def test_english_reorderings_and_equal_values_pass(a, b):
    v = verdict(a, b)
    assert v.accepted, v


@pytest.mark.parametrize(
    "a, b",
    [
        ("北京到上海的高铁要多久", "从北京坐高铁去上海需要多长时间"),
        ("上海到南京坐飞机要多久", "坐飞机从上海到南京要多久"),
        ("猫和狗哪个更聪明", "狗和猫哪个更聪明"),
        ("狗咬伤了猫怎么办", "猫被狗咬伤了怎么办"),
        ("为什么坐飞机不能用手机", "坐飞机为什么不能用手机"),
        ("今天北京天气怎么样", "北京今天天气怎么样"),
        ("狗狗可以吃葡萄吗", "葡萄狗狗可以吃吗"),
        ("在家怎么做蛋糕", "怎么在家做蛋糕"),
        ("这周末去哪玩", "周末去哪玩"),
        ("半小时能跑多少公里", "30分钟能跑多少公里"),
        ("半年没运动怎么恢复", "六个月没运动怎么恢复"),
        ("一天喝几杯水合适", "每天喝几杯水合适"),
        ("珠穆朗玛峰有多高", "珠穆朗玛峰的高度是多少"),
        ("乘坐地铁可以带宠物吗", "坐地铁能带宠物吗"),  # an added verb says how, not what
        ("怎样辨别真假茶叶", "如何分辨茶叶的真假"),  # 别 inside 辨别 negates nothing
        ("今晚吃什么", "今天晚上吃什么"),
        ("房子有多大", "房子多少平"),
        ("快递要多久", "快递要几天"),
        ("上海离北京多远", "北京离上海多远"),
        ("一个半小时的电影", "90分钟的电影"),
        ("这周三开会吗", "周三开会吗"),
        ("去上海坐高铁还是坐飞机好", "坐飞机还是坐高铁去上海好"),
    ],
)
def test_chinese_reorderings_and_equal_values_pass(a, b):
    v = verdict(a, b)
    assert v.accepted, v


def test_relative_time_tokens():
    assert en_rules.relative_times(("next", "weekend")) == {"weekend+1"}
    assert en_rules.relative_times(("the", "day", "after", "tomorrow")) == {"day+2"}
    assert en_rules.relative_times(("the", "last", "week", "of", "may")) == frozenset()  # a position
    assert zh_rules.relative_times("下周六") == {"week+1", "dow6"}
    assert zh_rules.relative_times("这周末") == {"weekend0"}
    assert zh_rules.relative_times("想问一下周末去哪") == {"weekend"}  # 一下 + 周末, not 下周末
    assert zh_rules.relative_times("一周一次") == frozenset()  # a count, not Monday


def test_periods_fractions_dimensions_and_amounts():
    assert en_rules.periods(("first", "quarter")) == {"Q1"}
    assert en_rules.periods(("the", "third", "step")) == frozenset()  # a position, for the ordinal rule
    assert zh_rules.periods("第二季度和下半年") == {"Q2", "H2"}
    assert zh_rules.periods("四分之三") == {"3/4"}
    assert analyze("How much does it weigh?").dims == {"weight"}
    assert analyze("How much is a ticket?").dims == {"price"}
    assert analyze("How much water do I need?").dims == frozenset()  # no dimension: agrees with any
    assert zh_rules.dimensions("小狗多大") == {"size", "age"}
    assert {v for _, _, v in zh_rules.quantities("一个半小时")} == {5400}
    assert {v for _, _, v in analyze("half an hour").quantities} == {1800}


def test_swapped_pair_needs_the_same_relation_between():
    content = {"a", "b", "c"}
    assert roles.swapped_pair(("a", "beat", "b"), ("b", "beat", "a"), content) == ("a", "b")
    assert roles.swapped_pair(("a", "and", "b"), ("b", "and", "a"), content, symmetric={"and"}) is None
    assert roles.swapped_pair(("a", "beat", "b"), ("b", "by", "beat", "a"), content, passive={"by"}) is None
    assert roles.swapped_pair(("x", "a", "b"), ("a", "b", "x"), content) is None  # a moved block
    assert roles.role_conflict(("to", "a", "from", "b"), ("from", "a", "to", "b"), content, {("to", "from")})


def test_numbers_from_an_nlp_analysis_are_compared():
    """NLP results with numbers reach the numbers rule (they raised NameError before)."""
    from types import SimpleNamespace

    three, five = (SimpleNamespace(numbers=[n], entities=[], negations=[]) for n in ("3", "5"))
    v = Verifier().verify("How do I bake a cake?", "How do I bake a cake today?", three, five)
    assert not v.accepted and v.reason == "number_mismatch", v
