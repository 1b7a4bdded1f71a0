"""Question analysis: language, connectives, independent sub-questions, entities, numbers, negations.

Modules
-------
* this one: the analyzers (dispatch by language, the async front with its bounds and timeout)
  and the fallback for mixed scripts and other languages (``sentences``: sentence split and
  numbers only);
* :mod:`.en`: English rules, trained spaCy pipeline or rules (``en-rules``);
* :mod:`.zh`: Chinese rules (``zh-jieba``: spaCy + jieba);
* :mod:`.common`: cleaning, script detection, digit numbers, the context-merge rule;
* :mod:`.pipelines`: the shared pipelines, loaded once, lazily; each used under its own lock;
* :mod:`.lexicon`: the word lists; :mod:`.result`: the typed result.

How a question is split
-----------------------
Sentences (. ? ! 。 ？ ！ ; ；) are split first. Inside a sentence a comma or conjunction (and, or,
but, then, 然后, 并且 ...) separates two clauses only when the part before it is itself a request
(a wh-/auxiliary question, an imperative, or for Chinese one holding a question word such as 什么,
怎么, 哪, 吗, 呢 or opening with 请/解释/列出 ...) *and* the part after starts a new one (a wh-word,
an auxiliary + subject, an imperative verb; for Chinese a question word, an imperative or a linking
connective). Hence coordinated noun phrases ("salt and pepper", "What are the pros and cons of
Python?", "猫和狗"), shared objects ("install and configure nginx"), subordinate clauses ("If it
rains, how much water falls?", "因为…，所以…") and context + question ("My laptop is slow, what
should I do?", "手机没电了，怎么办？") stay one clause. A sentence that is not a request (a
statement) is context: it joins the clause that follows it (or the one before, at the end).
Linking connectives and sequence markers ("and", "then", "First,", "然后", "首先，") belong to
neither clause; a clause keeps its own end punctuation.

What is reconstructed (``Clause.standalone``) and what is not
--------------------------------------------------------------
Only a shared request head: "Can/Could/Would/Will you (please)" or "Please" before a later
imperative ("Can you summarize X and translate it?" -> "Can you translate it?"), and 请 before a
later Chinese imperative ("请解释X，然后列出Y" -> "请列出Y"). Not reconstructed: pronouns ("it"),
dropped subjects ("熊猫吃什么，住在哪里？" -> "住在哪里？"), ellipsis ("上海呢？"), or a shared
"what is" (which, when shared, makes a noun coordination and so one clause anyway).

Offsets index the analysed text: the input with lone surrogates and control characters replaced
one-for-one (so offsets also hold for the original), cut to ``max_chars``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import re
import threading
import time
from collections import deque
from typing import Any

from ..config import NLPConfig
from ..errors import NLPError
from . import en, zh
from .common import Pipeline, detect_language, digit_numbers, is_han, sanitise
from .en import TRAINED_PIPELINES
from .pipelines import get_pipeline, pipeline_status
from .result import Clause, NLPResult

__all__ = ["NLPAnalyzer", "AsyncNLPAnalyzer", "analyze", "detect_language", "pipeline_status", "TRAINED_PIPELINES"]

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- other scripts

_ANY_SENT_RE = re.compile(r"[^.?!。？！]+[.?!。？！]*")


def _analyze_sentences(text: str, han: bool) -> dict[str, Any]:
    """Mixed scripts and other languages: sentences and numbers only."""
    clauses = []
    for m in _ANY_SENT_RE.finditer(text):
        a, b = m.span()
        while a < b and text[a].isspace():
            a += 1
        while b > a and text[b - 1].isspace():
            b -= 1
        if a < b and any(c.isalnum() for c in text[a:b]):
            clauses.append(Clause(text[a:b], a, b))
    numbers = digit_numbers(text) + (zh.numerals(text) if han else [])
    return {"clauses": clauses, "numbers": [n for _, n in sorted(numbers)]}


# --------------------------------------------------------------------------- analyzers


class NLPAnalyzer:
    """Synchronous analysis with shared, lazily loaded pipelines; safe to use from several threads."""

    def __init__(self, config: NLPConfig | None = None) -> None:
        self.config = config or NLPConfig()

    def en_pipeline(self) -> Pipeline:
        """The English pipeline this analyzer uses (trained when wanted and installed)."""
        if self.config.use_trained_pipeline:
            pipe = get_pipeline("en-trained")
            if pipe is not None:
                return pipe
        pipe = get_pipeline("en-rules")
        assert pipe is not None
        return pipe

    def warmup(self) -> dict[str, str]:
        """Load every pipeline now. Raises MissingDependencyError if spaCy or jieba is missing."""
        self.en_pipeline()
        get_pipeline("zh")
        return pipeline_status()

    def analyze(self, text: str) -> NLPResult:
        """Analyse ``text`` (its first ``max_chars`` characters). Never raises: failures set ``error``."""
        t0 = time.perf_counter()
        clean, truncated, language = "", False, "empty"
        try:
            clean = sanitise(text)
            truncated = len(clean) > self.config.max_chars
            clean = clean[: self.config.max_chars]
            language = detect_language(clean)
            pipeline = "none"
            found: dict[str, Any] = {}
            if language == "en":
                pipe = self.en_pipeline()
                pipeline, found = pipe.name, en.analyze(clean, pipe)
            elif language == "zh":
                pipe = get_pipeline("zh")
                assert pipe is not None
                pipeline, found = pipe.name, zh.analyze(clean, pipe)
            elif language != "empty":
                pipeline, found = "sentences", _analyze_sentences(clean, any(map(is_han, clean)))
            clauses = found.get("clauses", [])
            return NLPResult(
                language=language, pipeline=pipeline, truncated=truncated,
                connectives=found.get("connectives", []), clauses=clauses, is_complex=len(clauses) > 1,
                entities=found.get("entities", []), numbers=found.get("numbers", []),
                negations=found.get("negations", []), elapsed_ms=_ms_since(t0),
            )
        except Exception as exc:  # noqa: BLE001 - analysis is best effort, never fatal
            log.debug("NLP analysis failed", exc_info=True)
            return NLPResult(language=language, truncated=truncated, elapsed_ms=_ms_since(t0),
                             error=f"{type(exc).__name__}: {exc}")


def _ms_since(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000, 3)


_DEFAULT: NLPAnalyzer | None = None
_DEFAULT_LOCK = threading.Lock()


def analyze(text: str) -> NLPResult:
    """Analyse ``text`` with a shared default :class:`NLPAnalyzer` (default :class:`NLPConfig`)."""
    global _DEFAULT
    if _DEFAULT is None:
        with _DEFAULT_LOCK:
            if _DEFAULT is None:
                _DEFAULT = NLPAnalyzer()
    return _DEFAULT.analyze(text)


class AsyncNLPAnalyzer:
    """Async front of :class:`NLPAnalyzer`: a small thread pool, a concurrency bound and a timeout.

    ``await analyze(text)`` never raises (cancellation of the caller excepted): a failure or a
    timeout returns an :class:`NLPResult` with ``error`` set. A slot of ``max_concurrent_tasks``
    is held until the worker thread really finishes, so a timed-out analysis still counts.
    """

    _WINDOW = 1024  #: elapsed times kept for the percentiles

    def __init__(self, config: NLPConfig | None = None, *, analyzer: NLPAnalyzer | None = None) -> None:
        self.config = config or NLPConfig()
        self.analyzer = analyzer or NLPAnalyzer(self.config)
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=min(4, self.config.max_concurrent_tasks), thread_name_prefix="enhanced-llm-nlp")
        self._semaphores: dict[int, asyncio.Semaphore] = {}
        self._elapsed: deque[float] = deque(maxlen=self._WINDOW)
        self._recent_ok: deque[bool] = deque(maxlen=50)
        self._counts = {"analyses": 0, "failures": 0, "timeouts": 0, "truncated": 0}
        self._closed = False

    def _semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        sem = self._semaphores.get(id(loop))
        if sem is None:
            self._semaphores = {id(loop): asyncio.Semaphore(self.config.max_concurrent_tasks)}
            sem = self._semaphores[id(loop)]
        return sem

    async def analyze(self, text: str) -> NLPResult:
        """Analyse ``text`` off the event loop, within ``config.timeout`` seconds."""
        t0 = time.perf_counter()
        try:
            if self._closed:
                raise NLPError("analyzer is closed")
            loop = asyncio.get_running_loop()
            sem = self._semaphore()
            async with asyncio.timeout(self.config.timeout):
                await sem.acquire()
                try:
                    work = self._executor.submit(self.analyzer.analyze, text)
                except BaseException:
                    sem.release()
                    raise
                work.add_done_callback(lambda _f: _release_threadsafe(loop, sem))
                result = await asyncio.wrap_future(work)
        except TimeoutError:
            result = self._fallback(text, f"timeout: NLP analysis took over {self.config.timeout}s", t0)
            self._counts["timeouts"] += 1
        except Exception as exc:  # noqa: BLE001
            result = self._fallback(text, f"{type(exc).__name__}: {exc}", t0)
        self._record(result)
        return result

    def _fallback(self, text: object, error: str, t0: float) -> NLPResult:
        """An error result with what is cheap to know (language, truncation)."""
        try:
            clean = sanitise(text)
            truncated = len(clean) > self.config.max_chars
            language = detect_language(clean[: self.config.max_chars])
        except Exception:  # noqa: BLE001
            truncated, language = False, "other"
        return NLPResult(language=language, truncated=truncated, error=error, elapsed_ms=_ms_since(t0))

    def _record(self, result: NLPResult) -> None:
        self._counts["analyses"] += 1
        if result.error is not None and not result.error.startswith("timeout"):
            self._counts["failures"] += 1
        if result.truncated:
            self._counts["truncated"] += 1
        self._elapsed.append(result.elapsed_ms)
        self._recent_ok.append(result.error is None)

    def stats(self) -> dict[str, Any]:
        """Counters and the p50/p99 elapsed milliseconds of the last analyses."""
        times = sorted(self._elapsed)

        def pct(p: float) -> float | None:
            return round(times[min(len(times) - 1, int(p * len(times)))], 3) if times else None

        return {**self._counts, "p50_ms": pct(0.50), "p99_ms": pct(0.99), "window": len(times)}

    async def warmup(self) -> dict[str, str]:
        """Load the pipelines in the pool. Raises MissingDependencyError if spaCy or jieba is missing."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, self.analyzer.warmup)

    def health(self) -> dict[str, Any]:
        """"healthy", or "degraded" when closed, a pipeline failed to load, or most recent analyses failed."""
        pipelines = pipeline_status()
        failing = len(self._recent_ok) >= 5 and sum(self._recent_ok) < len(self._recent_ok) / 2
        bad = self._closed or failing or any(v.startswith("error") for v in pipelines.values())
        return {"status": "degraded" if bad else "healthy", "pipelines": pipelines,
                "closed": self._closed, "recent_failures": len(self._recent_ok) - sum(self._recent_ok)}

    def close(self) -> None:
        """Stop the thread pool (running analyses finish in the background); later calls return errors."""
        self._closed = True
        self._executor.shutdown(wait=False, cancel_futures=True)


def _release_threadsafe(loop: asyncio.AbstractEventLoop, sem: asyncio.Semaphore) -> None:
    try:
        loop.call_soon_threadsafe(sem.release)
    except RuntimeError:  # the loop is closed: nobody waits on this semaphore any more
        pass
