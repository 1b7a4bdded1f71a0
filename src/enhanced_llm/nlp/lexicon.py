"""Word lists the analyzer matches: connectives by function, negations, clause cues.

Plain data, English and Chinese, no imports. A connective's *function* is one of
:data:`FUNCTIONS`. English entries are lower-case and may span several words
("as well as"); Chinese entries are matched against jieba tokens.
"""

from __future__ import annotations

#: The connective functions reported in :class:`~enhanced_llm.nlp.result.Connective`.
FUNCTIONS = ("additive", "adversative", "causal", "conditional", "sequential", "alternative")

EN_CONNECTIVES: dict[str, str] = {
    **dict.fromkeys(
        ["and", "also", "as well as", "in addition", "additionally", "moreover", "furthermore",
         "besides", "and also"],
        "additive",
    ),
    **dict.fromkeys(
        ["but", "however", "although", "though", "even though", "yet", "whereas", "nevertheless",
         "nonetheless", "on the other hand", "instead", "despite", "in spite of"],
        "adversative",
    ),
    **dict.fromkeys(
        ["because", "since", "so", "therefore", "thus", "hence", "as a result", "due to",
         "consequently", "so that"],
        "causal",
    ),
    **dict.fromkeys(
        ["if", "unless", "otherwise", "provided that", "in case", "as long as", "even if"],
        "conditional",
    ),
    **dict.fromkeys(
        ["then", "first", "firstly", "second", "secondly", "third", "thirdly", "next", "finally",
         "lastly", "after that", "afterwards", "before that", "subsequently", "and then"],
        "sequential",
    ),
    **dict.fromkeys(["or", "either", "alternatively", "or else"], "alternative"),
}

#: English connectives that are connectives only at a clause start or before a comma
#: ("the first president", "so big" are not).
EN_POSITIONAL = frozenset({"first", "second", "third", "next", "so", "since", "yet"})

ZH_CONNECTIVES: dict[str, str] = {
    **dict.fromkeys(
        ["并且", "而且", "以及", "另外", "还有", "并", "同时", "此外", "况且", "再者", "也", "除此之外"],
        "additive",
    ),
    **dict.fromkeys(["但是", "可是", "但", "然而", "不过", "虽然", "尽管", "却", "虽说"], "adversative"),
    **dict.fromkeys(["因为", "所以", "由于", "因此", "因而", "既然", "于是", "以便"], "causal"),
    **dict.fromkeys(["如果", "那么", "假如", "要是", "只要", "除非", "否则", "的话", "假设", "如若"], "conditional"),
    **dict.fromkeys(["然后", "首先", "其次", "最后", "接着", "之后", "再", "第一", "第二", "第三", "随后"], "sequential"),
    **dict.fromkeys(["或者", "还是", "或", "要么", "或是"], "alternative"),
}

EN_NEGATIONS = frozenset(
    {"not", "no", "never", "n't", "without", "none", "nobody", "nothing", "neither", "nor",
     "cannot", "nowhere"}
)
ZH_NEGATIONS = frozenset(
    {"不", "没", "没有", "别", "无", "非", "未", "勿", "莫", "不要", "不是", "不能", "不会",
     "不用", "无法", "并非", "从未", "从不", "不必", "甭"}
)
#: Tokens starting with 不/没 that do not negate (but, continuously, quite a few ...).
ZH_NOT_NEGATION = frozenset({"不过", "不断", "不少", "不仅", "不但", "不管", "不如", "没准", "不久"})

# --- clause cues ------------------------------------------------------------------

EN_WH = frozenset({"what", "how", "why", "who", "whom", "whose", "which", "where", "when"})
EN_AUX = frozenset(
    {"is", "are", "was", "were", "am", "do", "does", "did", "can", "could", "will", "would",
     "should", "shall", "may", "might", "must", "has", "have", "had", "'s", "’s", "'re", "ca", "wo"}
)
EN_SUBJECT_START = frozenset(
    {"i", "you", "he", "she", "it", "we", "they", "there", "this", "that", "these", "those",
     "the", "a", "an", "my", "your", "his", "her", "its", "our", "their", "people", "someone"}
)
#: Verbs that open an imperative request ("explain X", "list Y").
EN_IMPERATIVES = frozenset(
    {"explain", "list", "describe", "tell", "give", "write", "translate", "name", "define",
     "compare", "summarize", "summarise", "show", "provide", "calculate", "find", "suggest",
     "recommend", "outline", "identify", "discuss", "analyze", "analyse", "evaluate", "estimate",
     "please", "create", "generate", "draft", "rewrite", "convert", "solve", "prove", "mention"}
)
#: Markers dropped from the start of a clause ("First, explain ..." -> "explain ...").
EN_LEADING_MARKERS = frozenset(
    {"and", "then", "also", "first", "firstly", "second", "secondly", "third", "thirdly", "next",
     "finally", "lastly", "additionally", "moreover", "furthermore", "plus", "afterwards"}
)
#: Subordinators: a clause they open is not a question of its own ("If it rains, ...").
EN_SUBORDINATORS = frozenset(
    {"if", "because", "although", "though", "since", "unless", "while", "whereas", "after",
     "before", "once", "as", "even", "given", "assuming", "suppose", "supposing"}
)

ZH_QUESTION_WORDS = (
    "什么", "怎么", "怎样", "如何", "为什么", "为何", "哪", "谁", "多少", "几", "吗", "呢", "是否",
    "是不是", "有没有", "能不能", "会不会", "可不可以", "要不要", "多大", "多久", "多长", "多远",
    "多高", "多重", "多快", "多深", "多宽", "多老", "么",
)
#: Verbs that open a Chinese request ("请解释…", "列出…").
ZH_IMPERATIVES = (
    "请", "解释", "说明", "列出", "列举", "介绍", "描述", "举", "给", "告诉", "写", "翻译", "比较",
    "帮", "推荐", "分析", "总结", "计算", "讲讲", "谈谈", "说说", "定义", "证明", "概括", "讲一下",
)
#: Subordinators: the clause they open attaches to the following main clause.
ZH_SUBORDINATORS = (
    "如果", "假如", "要是", "假设", "因为", "由于", "虽然", "尽管", "虽说", "既然", "只要", "除非",
    "即使", "就算", "当", "无论", "不管", "只有", "一旦",
)
#: Openers of a main clause that completes the previous one (所以, 但是 ...).
ZH_CONSEQUENTS = ("所以", "那么", "但是", "但", "可是", "却", "就", "因此", "否则", "而是", "那", "则")
#: Connectives that link two independent clauses; dropped from the clause start.
ZH_LINKING = ("然后", "并且", "而且", "另外", "此外", "同时", "接着", "以及", "再者", "除此之外", "并")
#: Sequence markers dropped from a clause start when a comma follows ("首先，…").
ZH_MARKERS = ("首先", "其次", "最后", "第一", "第二", "第三", "第四", "另外", "此外", "还有", "再者", "最后一点")
