"""The NLP layer: real spaCy (blank en/zh, trained English when installed) and real jieba."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("spacy", reason="the NLP layer needs the 'nlp' extra (spaCy)")
pytest.importorskip("jieba", reason="the NLP layer needs the 'nlp' extra (jieba)")

from enhanced_llm.config import NLPConfig  # noqa: E402
from enhanced_llm.nlp import (  # noqa: E402
    TRAINED_PIPELINES,
    AsyncNLPAnalyzer,
    NLPAnalyzer,
    NLPResult,
    analyze,
    detect_language,
)

HAS_TRAINED = any(importlib.util.find_spec(name) for name in TRAINED_PIPELINES)
trained_only = pytest.mark.skipif(
    not HAS_TRAINED, reason="no trained English pipeline: pip install 'enhanced-llm[nlp-trained]'")
GOLD = Path(__file__).resolve().parents[1] / "benchmarks" / "data" / "nlp_gold.json"

MODES = [pytest.param(False, id="rules"), pytest.param(True, id="trained", marks=trained_only)]


@pytest.fixture(scope="module")
def rules() -> NLPAnalyzer:
    return NLPAnalyzer(NLPConfig(use_trained_pipeline=False))


@pytest.fixture(scope="module", params=MODES)
def analyzer(request: pytest.FixtureRequest) -> NLPAnalyzer:
    return NLPAnalyzer(NLPConfig(use_trained_pipeline=request.param))


def texts(result: NLPResult) -> list[str]:
    return [c.text for c in result.clauses]


# --------------------------------------------------------------------------- language, pipelines


@pytest.mark.parametrize(
    ("text", "lang"),
    [("What is Python?", "en"), ("什么是机器学习？", "zh"), ("请比较Python和Java的性能。", "zh"),
     ("", "empty"), ("   \n", "empty"), ("Привет, как дела?", "other"), ("🙂🙂", "other"),
     ("What does 你好世界 mean in English or in Chinese?", "en"), ("Python 和 Java 哪个更好 better", "mixed")],
)
def test_detect_language(text: str, lang: str) -> None:
    assert detect_language(text) == lang


def test_pipelines_named(analyzer: NLPAnalyzer) -> None:
    en = analyzer.analyze("What is Python?").pipeline
    assert en in (TRAINED_PIPELINES if analyzer.config.use_trained_pipeline else ("en-rules",))
    assert analyzer.analyze("什么是机器学习？").pipeline == "zh-jieba"
    assert analyzer.analyze("Привет. Как дела?").pipeline == "sentences"


@trained_only
def test_trained_pipeline_used_and_gives_entities() -> None:
    result = NLPAnalyzer().analyze("Where was Barack Obama born and when did he move to Chicago?")
    assert result.pipeline in TRAINED_PIPELINES
    assert ("Barack Obama", "PERSON") in {(e.text, e.label) for e in result.entities}
    assert texts(result) == ["Where was Barack Obama born", "when did he move to Chicago?"]


# --------------------------------------------------------------------------- connectives


def test_english_connective_functions(rules: NLPAnalyzer) -> None:
    result = rules.analyze("If it rains, should I stay home or go out, because I need food but I am tired? "
                           "Then tell me more and explain why.")
    found = {(c.text.lower(), c.function) for c in result.connectives}
    assert found >= {("if", "conditional"), ("or", "alternative"), ("because", "causal"),
                     ("but", "adversative"), ("then", "sequential"), ("and", "additive")}
    for c in result.connectives:
        assert result.clauses and c.end > c.start


def test_positional_connectives_need_a_clause_start(rules: NLPAnalyzer) -> None:
    functions = [c.text for c in rules.analyze("Who was the first president?").connectives]
    assert "first" not in functions
    assert ("First", "sequential") in {(c.text, c.function) for c in rules.analyze("First, explain DNS.").connectives}


def test_chinese_connective_functions(rules: NLPAnalyzer) -> None:
    text = "如果下雨，那么我们待在家里，但是我想喝咖啡或者茶，因为很冷，然后并且睡觉。"
    result = rules.analyze(text)
    found = {(c.text, c.function) for c in result.connectives}
    assert found >= {("如果", "conditional"), ("那么", "conditional"), ("但是", "adversative"),
                     ("或者", "alternative"), ("因为", "causal"), ("然后", "sequential"), ("并且", "additive")}
    assert all(text[c.start:c.end] == c.text for c in result.connectives)


# --------------------------------------------------------------------------- clause splitting


@pytest.mark.parametrize(
    "text",
    ["How do I season food with salt and pepper?", "What are the pros and cons of Python?",
     "What is the difference between TCP and UDP?", "If it rains, how much water falls?",
     "How do I install and configure nginx?", "Should I learn Rust or Go?",
     "Although I exercise daily, why am I still gaining weight?", "My laptop is slow, what should I do?",
     "What is A and B?", "Explain the rise and fall of the Roman Empire."],
)
def test_english_single_questions_stay_whole(analyzer: NLPAnalyzer, text: str) -> None:
    result = analyzer.analyze(text)
    assert texts(result) == [text]
    assert result.is_complex is False


@pytest.mark.parametrize(
    ("text", "clauses"),
    [("What is A? What is B?", ["What is A?", "What is B?"]),
     ("What is X and how does it work?", ["What is X", "how does it work?"]),
     ("What is Python and what is Java?", ["What is Python", "what is Java?"]),
     ("Explain X, then list three uses of it.", ["Explain X", "list three uses of it."]),
     ("First, explain what DNS is. Second, describe how caching works.",
      ["explain what DNS is.", "describe how caching works."]),
     ("How does a car engine work, what fuel does it use, and how efficient is it?",
      ["How does a car engine work", "what fuel does it use", "how efficient is it?"]),
     ("Why do cats purr, and do dogs do anything similar?", ["Why do cats purr", "do dogs do anything similar?"])],
)
def test_english_compound_questions_split(analyzer: NLPAnalyzer, text: str, clauses: list[str]) -> None:
    result = analyzer.analyze(text)
    assert texts(result) == clauses
    assert result.is_complex
    assert all(text[c.start:c.end] == c.text for c in result.clauses)


def test_shared_head_is_reconstructed(analyzer: NLPAnalyzer) -> None:
    result = analyzer.analyze("Can you summarize this article and translate it into French?")
    assert texts(result) == ["Can you summarize this article", "translate it into French?"]
    assert result.clauses[0].standalone is None
    assert result.clauses[1].standalone == "Can you translate it into French?"


@pytest.mark.parametrize(
    "text",
    ["猫和狗哪个更聪明？", "Python的优点和缺点是什么？", "如果明天下雨，我们应该怎么办？",
     "因为天气很冷，所以我们应该穿什么衣服？", "我想学习编程，应该从哪种语言开始？",
     "虽然我每天锻炼，但是为什么体重还在增加？", "买房子好还是租房子好？"],
)
def test_chinese_single_questions_stay_whole(rules: NLPAnalyzer, text: str) -> None:
    assert texts(rules.analyze(text)) == [text]


@pytest.mark.parametrize(
    ("text", "clauses"),
    [("什么是人工智能？它有什么用途？", ["什么是人工智能？", "它有什么用途？"]),
     ("北京的天气怎么样，上海呢？", ["北京的天气怎么样", "上海呢？"]),
     ("请解释一下量子计算，然后列出三个应用。", ["请解释一下量子计算", "列出三个应用。"]),
     ("首先，解释什么是DNS；其次，说明缓存如何工作；最后，举一个例子。",
      ["解释什么是DNS", "说明缓存如何工作", "举一个例子。"]),
     ("这本书讲了什么，作者是谁，什么时候出版的？", ["这本书讲了什么", "作者是谁", "什么时候出版的？"])],
)
def test_chinese_compound_questions_split(rules: NLPAnalyzer, text: str, clauses: list[str]) -> None:
    result = rules.analyze(text)
    assert texts(result) == clauses
    assert all(text[c.start:c.end] == c.text for c in result.clauses)


def test_chinese_standalone_request(rules: NLPAnalyzer) -> None:
    result = rules.analyze("请解释一下量子计算，然后列出三个应用。")
    assert result.clauses[1].standalone == "请列出三个应用。"


def test_gold_set_clause_counts(analyzer: NLPAnalyzer) -> None:
    items = json.loads(GOLD.read_text(encoding="utf-8"))["items"]
    assert len(items) >= 80
    for lang in ("en", "zh"):
        rows = [i for i in items if i["lang"] == lang]
        right = sum(len(analyzer.analyze(i["text"]).clauses) == len(i["clauses"]) for i in rows)
        assert right / len(rows) >= 0.9, lang
        assert all(len(analyzer.analyze(i["text"]).clauses) == 1 for i in rows if i["must_not_split"])


# --------------------------------------------------------------------------- entities, numbers, negations


def test_rule_entities_are_capitalised_spans(rules: NLPAnalyzer) -> None:
    ents = {(e.text, e.label) for e in rules.analyze("What did Marie Curie discover in Paris about DNS?").entities}
    assert {("Marie Curie", "MISC"), ("Paris", "MISC"), ("DNS", "MISC")} <= ents
    assert not any(e[0].startswith("What") for e in ents)


def test_chinese_entities_from_jieba(rules: NLPAnalyzer) -> None:
    text = "北京和上海哪个城市更大？"
    ents = rules.analyze(text).entities
    assert ("北京", "GPE") in {(e.text, e.label) for e in ents}
    assert all(text[e.start:e.end] == e.text for e in ents)


def test_numbers(analyzer: NLPAnalyzer, rules: NLPAnalyzer) -> None:
    assert analyzer.analyze("If I invest 1,000 dollars at 2.5 percent for three years?").numbers == ["1000", "2.5", "3"]
    assert rules.analyze("如果我投资一千元，三年后会有多少钱？").numbers == ["1000", "3"]
    assert rules.analyze("请解释一下二十五的含义").numbers == ["25"]  # 一下 is not a number


def test_negations(analyzer: NLPAnalyzer, rules: NLPAnalyzer) -> None:
    assert analyzer.analyze("Why can't I sleep without pills and never rest?").negations == ["n't", "without", "never"]
    assert rules.analyze("我不想去，也没有时间，不过别担心。").negations == ["不", "没有", "别"]


# --------------------------------------------------------------------------- bounds and hostile input


def test_truncation(rules: NLPAnalyzer) -> None:
    analyzer = NLPAnalyzer(NLPConfig(use_trained_pipeline=False, max_chars=40))
    text = "What is A? " * 20
    result = analyzer.analyze(text)
    assert result.truncated and result.error is None
    assert all(c.end <= 40 for c in result.clauses)
    assert not rules.analyze("What is A?").truncated


def test_module_level_analyze_and_to_dict() -> None:
    result = analyze("What is Python and what is Java? 猫和狗哪个更聪明？")
    data = result.to_dict()
    assert json.loads(json.dumps(data, ensure_ascii=False)) == data
    assert set(data) >= {"language", "connectives", "clauses", "is_complex", "entities", "numbers",
                         "negations", "truncated", "pipeline", "elapsed_ms", "error"}


HOSTILE = ["", "   \t\n", "a" * 200_000, "🙂" * 500 + "?", "\x00\x01\x1b[31mred\x7f", "\ud800", "What \udfff is this?",
           "Python 和 Java, какой лучше? 🙂", "?!。？", "和" * 5000, "and, and, and then, or ;;" * 300,
           "\u200b\ufeff", "Ω" * 10]


@pytest.mark.parametrize("text", HOSTILE, ids=range(len(HOSTILE)))
def test_sync_analyze_handles_hostile_input(rules: NLPAnalyzer, text: str) -> None:
    result = rules.analyze(text)
    assert result.error is None
    json.dumps(result.to_dict())


async def test_async_never_raises_on_hostile_input() -> None:
    nlp = AsyncNLPAnalyzer(NLPConfig(max_chars=4000, timeout=10))
    try:
        results = await asyncio.gather(*(nlp.analyze(t) for t in [*HOSTILE, None, b"\xff\xfe bytes"]))
        for text, result in zip(HOSTILE, results):
            assert isinstance(result, NLPResult)
            json.dumps(result.to_dict())
            assert result.truncated == (len(text) > 4000)
        assert results[0].language == "empty" and results[0].clauses == []
        assert nlp.stats()["truncated"] >= 2
    finally:
        nlp.close()


async def test_async_timeout_returns_error_result(monkeypatch: pytest.MonkeyPatch) -> None:
    nlp = AsyncNLPAnalyzer(NLPConfig(timeout=0.2))
    monkeypatch.setattr(nlp.analyzer, "analyze", lambda text: time.sleep(1.0))
    t0 = time.perf_counter()
    result = await nlp.analyze("What is Python?")
    elapsed = time.perf_counter() - t0
    assert 0.15 <= elapsed < 0.7
    assert result.error is not None and result.error.startswith("timeout")
    assert result.language == "en"
    assert nlp.stats()["timeouts"] == 1
    nlp.close()


async def test_async_failure_returns_error_result(monkeypatch: pytest.MonkeyPatch) -> None:
    nlp = AsyncNLPAnalyzer()

    def boom(text: str) -> NLPResult:
        raise RuntimeError("kaputt")

    monkeypatch.setattr(nlp.analyzer, "analyze", boom)
    result = await nlp.analyze("x" * 5000)
    assert result.error == "RuntimeError: kaputt" and result.truncated
    assert nlp.stats()["failures"] == 1
    nlp.close()
    closed = await nlp.analyze("What is Python?")
    assert closed.error is not None and "closed" in closed.error
    assert nlp.health()["status"] == "degraded"


async def test_concurrency_bound_is_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    nlp = AsyncNLPAnalyzer(NLPConfig(max_concurrent_tasks=3, timeout=5))
    lock = threading.Lock()
    running = peak = 0

    def slow(text: str) -> NLPResult:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.03)
        with lock:
            running -= 1
        return NLPResult(language="en")

    monkeypatch.setattr(nlp.analyzer, "analyze", slow)
    results = await asyncio.gather(*(nlp.analyze("q") for _ in range(12)))
    assert all(r.error is None for r in results)
    assert peak == 3
    nlp.close()


async def test_warmup_stats_health() -> None:
    nlp = AsyncNLPAnalyzer(NLPConfig(use_trained_pipeline=False))
    pipelines = await nlp.warmup()
    assert pipelines["en-rules"] == "en-rules" and pipelines["zh"] == "zh-jieba"
    for text in ["What is A? What is B?", "什么是机器学习？"]:
        assert (await nlp.analyze(text)).error is None
    stats = nlp.stats()
    assert stats["analyses"] == 2 and stats["failures"] == stats["timeouts"] == 0
    assert stats["p50_ms"] is not None and stats["p99_ms"] >= stats["p50_ms"]
    health = nlp.health()
    assert health["status"] == "healthy" and "zh" in health["pipelines"]
    nlp.close()


def test_thread_safe_shared_pipelines(analyzer: NLPAnalyzer) -> None:
    inputs = ["What is X and how does it work?", "请解释一下量子计算，然后列出三个应用。", "Who are Romeo and Juliet?"] * 10
    expected = [texts(analyzer.analyze(t)) for t in inputs]
    got: list[list[str]] = [[] for _ in inputs]

    def work(k: int) -> None:
        for i in range(k, len(inputs), 4):
            got[i] = texts(analyzer.analyze(inputs[i]))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == expected
