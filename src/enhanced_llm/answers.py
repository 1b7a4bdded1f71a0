"""Answers: recording an engine request's outputs into a cache entry, and rebuilding outputs from one.

A recorder is also the live stream that coalesced followers read: a
:class:`FollowerFeed` turns what the leader's recorder has seen so far into
outputs of the follower's own kind (deltas or cumulative), as they come.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from vllm.outputs import CompletionOutput, RequestOutput
from vllm.sampling_params import RequestOutputKind, SamplingParams

from .cache.entry import CachedCompletion, CacheEntry
from .cache.keys import RequestKey

__all__ = ["AnswerRecorder", "FollowerFeed", "aborted_output", "output_from_entry", "NORMAL_FINISH"]

#: Finish reasons of an answer worth storing; anything else (abort, error) is never cached.
NORMAL_FINISH = ("stop", "length")


def _completion(index: int, text: str, token_ids: list[int], logprob: Any, reason: Any, stop: Any, lora_request: Any) -> CompletionOutput:
    """One choice of a rebuilt output (cached answers carry no logprobs)."""
    return CompletionOutput(
        index=index, text=text, token_ids=list(token_ids), cumulative_logprob=logprob, logprobs=None,
        finish_reason=reason, stop_reason=stop, lora_request=lora_request,
    )


def _request_output(
    request_id: str, prompt: str | None, prompt_token_ids: list[int], completions: list[CompletionOutput],
    finished: bool, lora_request: Any, **extra: Any,
) -> RequestOutput:
    return RequestOutput(
        request_id=request_id, prompt=prompt, prompt_token_ids=list(prompt_token_ids), prompt_logprobs=None,
        outputs=completions, finished=finished, lora_request=lora_request, **extra,
    )


def output_from_entry(
    entry: CacheEntry, request_id: str, lora_request: Any,
    prompt: str | None = None, prompt_token_ids: list[int] | None = None,
) -> RequestOutput:
    """A finished ``RequestOutput`` equal to the one the engine produced.

    A semantic hit passes this request's own prompt (the entry's is another question).
    """
    completions = [
        _completion(c.index, c.text, c.token_ids, c.cumulative_logprob, c.finish_reason, c.stop_reason, lora_request)
        for c in entry.completions
    ]
    if prompt_token_ids is None:
        prompt, prompt_token_ids = entry.prompt, entry.prompt_token_ids
    return _request_output(
        request_id, prompt, prompt_token_ids, completions, True, lora_request, num_cached_tokens=len(prompt_token_ids)
    )


class AnswerRecorder:
    """Observes one engine request's outputs and builds its :class:`CacheEntry`.

    ``on_done(entry, storable)`` is called once: with the entry when every choice
    ended normally (``stop`` / ``length``) within ``max_tokens`` output tokens, with
    None when the request was aborted, failed or cut short, and with
    ``storable=False`` when the request was answered elsewhere (a semantic hit).

    Followers (:meth:`follow`) are called after every output once the stream is
    ``live``: from the start, or after a semantic race the engine's answer won.
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
        self.live = asyncio.Event()  #: set when the engine's outputs are this request's answer
        self.engine_request_id: str | None = None
        self.orphaned = False  #: its own reader went away; the engine request runs on for followers
        self._followers: list[Callable[[Any], None]] = []

    def __call__(self, output: Any) -> None:
        if self._on_done is None:
            return
        if not isinstance(output, RequestOutput):  # an exception: the request failed
            self._tell_followers(output)
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
        self._tell_followers(None)
        if output.finished:
            self._done(self._entry(), True)

    # -- followers ---------------------------------------------------------------------------

    def follow(self, feed: Callable[[Any], None]) -> bool:
        """Call ``feed(None)`` now and after every output (``feed(exc)`` if the request fails).

        False when the answer is already decided (then wait for the flight's entry instead).
        """
        if self._on_done is None or not self.live.is_set():
            return False
        self._followers.append(feed)
        feed(None)
        return True

    def unfollow(self, feed: Callable[[Any], None]) -> None:
        if feed in self._followers:
            self._followers.remove(feed)

    @property
    def n(self) -> int:
        """Choices per request (``SamplingParams.n``)."""
        return self._n

    @property
    def followed(self) -> bool:
        return bool(self._followers)

    def _tell_followers(self, error: Any) -> None:
        if not self.live.is_set():
            return
        for feed in list(self._followers):
            feed(error)

    def snapshot(self) -> tuple[str | None, list[int] | None, dict[int, tuple[str, list[int], tuple[Any, Any, Any]]]]:
        """(prompt, prompt token ids, {index: (text, token ids, (finish reason, stop reason, logprob))}) so far."""
        choices = {i: (self._texts.get(i, ""), self._tokens.get(i, []), self._ends[i]) for i in sorted(self._ends)}
        return self._prompt, self._prompt_token_ids, choices

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


def aborted_output(recorder: AnswerRecorder, request_id: str, output_kind: RequestOutputKind, lora_request: Any) -> RequestOutput:
    """The final output of a request its reader aborted: what vLLM would send (nothing new in DELTA
    mode, everything so far otherwise), ``finish_reason="abort"``."""
    prompt, prompt_token_ids, choices = recorder.snapshot()
    delta = output_kind == RequestOutputKind.DELTA
    completions = [
        _completion(i, "" if delta else text, [] if delta else tokens, end[2], "abort", None, lora_request)
        for i, (text, tokens, end) in choices.items()
    ]
    return _request_output(request_id, prompt, prompt_token_ids or [], completions, True, lora_request)


class FollowerFeed:
    """Puts a leader's recorded stream into a follower's collector, in the follower's output kind."""

    def __init__(self, recorder: AnswerRecorder, collector: Any, request_id: str, output_kind: RequestOutputKind, lora_request: Any) -> None:
        self.recorder = recorder
        self._collector = collector
        self._request_id = request_id
        self._delta = output_kind == RequestOutputKind.DELTA
        self._lora = lora_request
        self._sent: dict[int, tuple[int, int]] = {}  # index -> (chars, tokens) delivered
        self.delivered = False  #: something reached the follower
        self.finished = False  #: the final output (or an error) reached the follower

    def __call__(self, error: Any) -> None:
        if self.finished:
            return
        if error is not None:
            if self.delivered:  # half an answer is out: the follower fails as the leader did
                self.finished = True
                self._collector.put(error)
            return
        prompt, prompt_token_ids, choices = self.recorder.snapshot()
        if not choices or prompt_token_ids is None:
            return
        finished = len(choices) == self.recorder.n and all(end[0] is not None for _, _, end in choices.values())
        completions = []
        for i, (text, tokens, (reason, stop, logprob)) in choices.items():
            chars, count = self._sent.get(i, (0, 0))
            if self._delta:
                text, tokens = text[chars:], tokens[count:]
            completions.append(_completion(i, text, tokens, logprob, reason, stop, self._lora))
            self._sent[i] = (chars + len(text), count + len(tokens)) if self._delta else (len(text), len(tokens))
        self.delivered, self.finished = True, finished
        self._collector.put(_request_output(self._request_id, prompt, prompt_token_ids, completions, finished, self._lora))
