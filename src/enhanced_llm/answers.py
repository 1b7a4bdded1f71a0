"""Answers: recording an engine request's outputs, and building vLLM outputs from a recorded answer.

* :class:`AnswerRecorder` watches one engine request's outputs (DELTA or CUMULATIVE) and
  keeps, per choice, the text and token ids so far. It keeps *references* to what vLLM hands
  out (a cumulative output's token list is the detokenizer's own list; prompt token ids are
  shared by every output of a request) and copies once, when a finished answer becomes a
  :class:`~enhanced_llm.cache.entry.CacheEntry`. So recording costs O(new tokens) per step,
  whatever the prompt length and however many coalesced requests read along.
* :func:`output_from_entry` rebuilds the finished ``RequestOutput`` the engine produced, for
  the request being answered (its own request id, prompt and prompt token ids).
* :func:`progress_output` is what vLLM sends a request at a given point of its generation:
  an intermediate output, or the final output of an abort (``finish_reason="abort"``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from vllm.outputs import CompletionOutput, RequestOutput
from vllm.sampling_params import RequestOutputKind

from .cache.entry import CachedCompletion, CacheEntry
from .cache.keys import RequestKey

__all__ = [
    "NORMAL_FINISH", "AnswerRecorder", "RecordedChoice", "Sent", "entry_fits", "output_from_entry", "progress_output",
    "request_output",
]

#: Finish reasons of an answer worth storing; anything else (abort, error) is never cached.
NORMAL_FINISH = ("stop", "length")


class RecordedChoice:
    """One choice of a running request: its text as parts (no quadratic concatenation), its token
    ids, and how it ended (``finish_reason`` None while it runs)."""

    __slots__ = ("index", "_parts", "chars", "token_ids", "finish_reason", "stop_reason", "cumulative_logprob")

    def __init__(self, index: int) -> None:
        self.index = index
        self._parts: list[str] = []
        self.chars = 0
        self.token_ids: list[int] = []
        self.finish_reason: str | None = None
        self.stop_reason: int | str | None = None
        self.cumulative_logprob: float | None = None

    def add(self, output: CompletionOutput, delta: bool) -> None:
        if delta:
            if output.text:
                self._parts.append(output.text)
                self.chars += len(output.text)
            self.token_ids.extend(output.token_ids)
        else:  # cumulative: everything so far; keep the references
            self._parts = [output.text] if output.text else []
            self.chars = len(output.text)
            self.token_ids = output.token_ids  # type: ignore[assignment]
        self.finish_reason = output.finish_reason
        self.stop_reason = output.stop_reason
        self.cumulative_logprob = output.cumulative_logprob

    @property
    def text(self) -> str:
        if len(self._parts) > 1:
            self._parts[:] = ["".join(self._parts)]
        return self._parts[0] if self._parts else ""

    def text_since(self, offset: int) -> str:
        """The text after the first ``offset`` characters (O(new text))."""
        if offset >= self.chars:
            return ""
        tail, length = [], self.chars
        for part in reversed(self._parts):
            if length <= offset:
                break
            tail.append(part if length - len(part) >= offset else part[offset - (length - len(part)) :])
            length -= len(part)
        return "".join(reversed(tail))

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


class AnswerRecorder:
    """The outputs of one engine request so far, choice by choice (see the module docstring)."""

    def __init__(self, n: int, delta: bool) -> None:
        self.n = n
        self._delta = delta
        self.choices: dict[int, RecordedChoice] = {}
        self.prompt: str | None = None
        self.prompt_token_ids: list[int] | None = None
        self.num_cached_tokens = 0
        self.finished = False
        self.steps = 0  #: outputs recorded
        self._started = time.perf_counter()

    def record(self, output: RequestOutput) -> None:
        for completion in output.outputs:
            choice = self.choices.get(completion.index)
            if choice is None:
                choice = self.choices[completion.index] = RecordedChoice(completion.index)
            choice.add(completion, self._delta)
        if output.prompt_token_ids is not None:
            self.prompt_token_ids = output.prompt_token_ids
        if output.prompt is not None:
            self.prompt = output.prompt
        self.num_cached_tokens = output.num_cached_tokens or 0
        self.finished = output.finished
        self.steps += 1

    @property
    def complete(self) -> bool:
        """Every choice ended normally (``stop`` / ``length``): the answer may be stored."""
        return (
            self.finished
            and len(self.choices) == self.n
            and all(c.finish_reason in NORMAL_FINISH for c in self.choices.values())
        )

    def entry(self, key: RequestKey, max_tokens: int) -> CacheEntry | None:
        """The finished answer as a cache entry (copied here, once), or None when it must not be stored."""
        if not self.complete or self.prompt_token_ids is None:
            return None
        completions = [
            CachedCompletion(c.index, c.text, list(c.token_ids), c.cumulative_logprob, c.finish_reason, c.stop_reason)  # type: ignore[arg-type]
            for c in sorted(self.choices.values(), key=lambda c: c.index)
        ]
        if sum(len(c.token_ids) for c in completions) > max_tokens:
            return None
        return CacheEntry(
            key=key.exact, scope=key.scope, prompt=self.prompt, prompt_token_ids=list(self.prompt_token_ids),
            completions=completions, question=key.question, generation_seconds=time.perf_counter() - self._started,
        )


def entry_fits(entry: CacheEntry, max_tokens: int | None) -> bool:
    """Whether a stored answer is what the engine would give a request allowed ``max_tokens``
    (the semantic cache ignores ``max_tokens`` in its scope and checks this instead): every
    choice stopped by itself within the limit, or was cut at exactly that limit."""
    if max_tokens is None:
        return all(c.finish_reason == "stop" for c in entry.completions)
    return all(
        (c.finish_reason == "stop" and len(c.token_ids) <= max_tokens)
        or (c.finish_reason == "length" and len(c.token_ids) == max_tokens)
        for c in entry.completions
    )


def _completion(index: int, text: str, token_ids: Sequence[int], logprob: Any, reason: Any, stop: Any, lora: Any) -> CompletionOutput:
    """One choice of a rebuilt output (cached answers carry no logprobs)."""
    return CompletionOutput(
        index=index, text=text, token_ids=token_ids, cumulative_logprob=logprob, logprobs=None,  # type: ignore[arg-type]
        finish_reason=reason, stop_reason=stop, lora_request=lora,
    )


def request_output(
    request_id: str, prompt: str | None, prompt_token_ids: list[int], completions: list[CompletionOutput],
    finished: bool, lora_request: Any, num_cached_tokens: int = 0,
) -> RequestOutput:
    return RequestOutput(
        request_id=request_id, prompt=prompt, prompt_token_ids=prompt_token_ids, prompt_logprobs=None,
        outputs=completions, finished=finished, lora_request=lora_request, num_cached_tokens=num_cached_tokens,
    )


def output_from_entry(
    entry: CacheEntry, request_id: str, lora_request: Any, prompt: str | None, prompt_token_ids: list[int]
) -> RequestOutput:
    """The finished output the engine produced for ``entry``, addressed to the request being answered:
    its own id, prompt text and prompt token ids (a semantic hit's entry answered another question)."""
    completions = [
        _completion(c.index, c.text, list(c.token_ids), c.cumulative_logprob, c.finish_reason, c.stop_reason, lora_request)
        for c in entry.completions
    ]
    return request_output(
        request_id, prompt, prompt_token_ids, completions, True, lora_request, num_cached_tokens=len(prompt_token_ids)
    )


class Sent:
    """How much of one choice a reader has been sent."""

    __slots__ = ("chars", "tokens", "ended")

    def __init__(self) -> None:
        self.chars = 0
        self.tokens = 0
        self.ended = False


def progress_output(
    recorder: AnswerRecorder,
    request_id: str,
    output_kind: RequestOutputKind,
    lora_request: Any,
    sent: dict[int, Sent],
    prompt: str | None,
    prompt_token_ids: list[int],
    abort: bool = False,
) -> RequestOutput | None:
    """What a reader of ``recorder``'s request is sent now, in its own output kind, or None.

    ``sent`` (per choice index: what this reader was already sent) is updated. DELTA readers get
    what is new; CUMULATIVE readers everything so far of each changed choice; FINAL_ONLY readers
    one output at the end with every choice. With ``abort`` this is the final output of an aborted
    request, as vLLM builds it: every choice, ``finish_reason="abort"`` on those still running,
    nothing new of them in DELTA mode and everything so far otherwise.
    """
    finished = abort or (recorder.finished and len(recorder.choices) == recorder.n)
    if output_kind == RequestOutputKind.FINAL_ONLY and not finished:
        return None
    delta = output_kind == RequestOutputKind.DELTA
    everything = finished and output_kind != RequestOutputKind.DELTA
    completions = []
    for index in range(recorder.n):
        choice = recorder.choices.get(index)
        if choice is None:
            if not abort:
                continue
            choice = RecordedChoice(index)
        seen = sent.get(index)
        if seen is None:
            seen = sent[index] = Sent()
        running = not choice.finished
        changed = seen.tokens < len(choice.token_ids) or seen.chars < choice.chars or choice.finished != seen.ended
        if not (changed or everything or (abort and running)):
            continue
        if running and abort:
            reason, stop = "abort", None
        else:
            reason, stop = choice.finish_reason, choice.stop_reason
        if not delta:
            text, tokens = choice.text, choice.token_ids
        elif running and abort:
            text, tokens = "", []
        else:
            text, tokens = choice.text_since(seen.chars), choice.token_ids[seen.tokens :]
        completions.append(_completion(index, text, tokens, choice.cumulative_logprob, reason, stop, lora_request))
        seen.chars, seen.tokens, seen.ended = choice.chars, len(choice.token_ids), True if abort else choice.finished
    if not completions:
        return None
    return request_output(
        request_id, prompt, prompt_token_ids, completions, finished, lora_request, recorder.num_cached_tokens
    )
