"""Answers: recording an engine request's outputs into a cache entry, and rebuilding outputs from one."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from vllm.outputs import CompletionOutput, RequestOutput
from vllm.sampling_params import RequestOutputKind, SamplingParams

from .cache.entry import CachedCompletion, CacheEntry
from .cache.keys import RequestKey

__all__ = ["AnswerRecorder", "output_from_entry", "NORMAL_FINISH"]

#: Finish reasons of an answer worth storing; anything else (abort, error) is never cached.
NORMAL_FINISH = ("stop", "length")


def output_from_entry(
    entry: CacheEntry, request_id: str, lora_request: Any,
    prompt: str | None = None, prompt_token_ids: list[int] | None = None,
) -> RequestOutput:
    """A finished ``RequestOutput`` equal to the one the engine produced.

    A semantic hit passes this request's own prompt (the entry's is another question).
    """
    completions = [
        CompletionOutput(
            index=c.index, text=c.text, token_ids=list(c.token_ids), cumulative_logprob=c.cumulative_logprob,
            logprobs=None, finish_reason=c.finish_reason, stop_reason=c.stop_reason, lora_request=lora_request,
        )
        for c in entry.completions
    ]
    if prompt_token_ids is None:
        prompt, prompt_token_ids = entry.prompt, entry.prompt_token_ids
    return RequestOutput(
        request_id=request_id, prompt=prompt, prompt_token_ids=list(prompt_token_ids),
        prompt_logprobs=None, outputs=completions, finished=True, lora_request=lora_request,
        num_cached_tokens=len(prompt_token_ids),
    )


class AnswerRecorder:
    """Observes one engine request's outputs and builds its :class:`CacheEntry`.

    ``on_done(entry, storable)`` is called once: with the entry when every choice
    ended normally (``stop`` / ``length``) within ``max_tokens`` output tokens, with
    None when the request was aborted, failed or cut short, and with
    ``storable=False`` when the request was answered elsewhere (a semantic hit).
    """

    def __init__(
        self, key: RequestKey, params: SamplingParams, on_done: Callable[[CacheEntry | None, bool], None], max_tokens: int
    ) -> None:
        self._key = key
        self._n = params.n
        self._delta = params.output_kind == RequestOutputKind.DELTA
        self._on_done: Callable[[CacheEntry | None, bool], None] | None = on_done
        self._max_tokens = max_tokens
        self._started = time.perf_counter()
        self._texts: dict[int, str] = {}
        self._tokens: dict[int, list[int]] = {}
        self._ends: dict[int, tuple[str | None, int | str | None, float | None]] = {}
        self._prompt: str | None = None
        self._prompt_token_ids: list[int] | None = None

    def __call__(self, output: Any) -> None:
        if self._on_done is None:
            return
        if not isinstance(output, RequestOutput):  # an exception: the request failed
            self.abandon()
            return
        for c in output.outputs:
            if self._delta:
                self._texts[c.index] = self._texts.get(c.index, "") + c.text
                self._tokens.setdefault(c.index, []).extend(c.token_ids)
            else:  # cumulative or final-only: each output holds everything so far (copy: vLLM reuses lists)
                self._texts[c.index] = c.text
                self._tokens[c.index] = list(c.token_ids)
            self._ends[c.index] = (c.finish_reason, c.stop_reason, c.cumulative_logprob)
        if output.prompt_token_ids is not None:
            self._prompt_token_ids = list(output.prompt_token_ids)
        self._prompt = output.prompt if output.prompt is not None else self._prompt
        if output.finished:
            self._done(self._entry(), True)

    def _entry(self) -> CacheEntry | None:
        if len(self._ends) != self._n or self._prompt_token_ids is None:
            return None
        if any(reason not in NORMAL_FINISH for reason, _, _ in self._ends.values()):
            return None  # aborted, errored, or cut short: never cached
        completions = [
            CachedCompletion(i, self._texts[i], self._tokens[i], self._ends[i][2], self._ends[i][0], self._ends[i][1])  # type: ignore[arg-type]
            for i in sorted(self._ends)
        ]
        entry = CacheEntry(
            key=self._key.exact, scope=self._key.scope, prompt=self._prompt,
            prompt_token_ids=self._prompt_token_ids, completions=completions, question=self._key.question,
            generation_seconds=time.perf_counter() - self._started,
        )
        return entry if entry.num_output_tokens <= self._max_tokens else None

    def abandon(self) -> None:
        """The request ended without a storable answer."""
        self._done(None, False)

    def resolve(self, entry: CacheEntry) -> None:
        """The request was answered from the semantic cache: nothing to store, waiters get ``entry``."""
        self._done(entry, False)

    def _done(self, entry: CacheEntry | None, storable: bool) -> None:
        on_done, self._on_done = self._on_done, None
        if on_done is not None:
            on_done(entry, storable)
