"""Single flight: identical requests in flight share one generation.

The first cacheable request for an exact key *leads*: a :class:`Flight` is opened for the key
and its engine request (the flight's *driver*) records its outputs in an
:class:`~enhanced_llm.answers.AnswerRecorder`. Identical requests arriving meanwhile *follow*:

* before the leader's answer is decided (its Redis read, its semantic race) they wait; a Redis
  or semantic answer then answers them too, each addressed to its own request;
* once the engine's outputs are the answer (the flight is *live*) each follower reads them as
  they come, in its own output kind (DELTA, CUMULATIVE, FINAL_ONLY) and for any ``n``.

A reader that leaves (``abort``, a closed stream) only leaves: the engine request runs on while
anyone reads it, also when the leader's own reader left, and is aborted with the last reader.
A flight whose driver fails hands the followers that have seen nothing yet to **one** new
leader (elected: the first of them), which generates for the rest; followers that already
streamed part of the answer fail as the driver did, since they cannot start over.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from vllm.v1.engine.exceptions import EngineDeadError

from ..answers import AnswerRecorder, Sent
from ..cache.entry import CacheEntry
from ..cache.keys import RequestKey
from .flow import RequestFlow, Role

__all__ = ["Flight", "SingleFlight"]

logger = logging.getLogger(__name__)


class Flight:
    """One generation shared by identical requests."""

    def __init__(self, key: RequestKey, driver: RequestFlow, owner: SingleFlight) -> None:
        self.key = key
        self.owner = owner
        self.driver = driver  #: the flow whose engine request this is
        self.recorder = AnswerRecorder(driver.n, delta=driver.output_kind.name == "DELTA")
        self.followers: list[RequestFlow] = []
        self.live = False  #: the engine's outputs are the answer (after the driver's Redis read and race)
        self.store = bool(driver.plan and driver.plan.store)
        self.done = False
        driver.flight = self

    def record(self, output: Any) -> None:
        """An output (or an exception) of the driver's engine request."""
        self.owner.record(self, output)

    @property
    def readers(self) -> int:
        """Readers still waiting for outputs: the driver's own (unless it left) and the followers."""
        own = 0 if (self.driver.reader_gone or self.driver.ended) else 1
        return own + sum(1 for f in self.followers if not f.ended)

    def driver_sent(self) -> dict[int, Sent]:
        """What the driver's reader received: everything recorded (vLLM delivered it directly)."""
        sent = {}
        for index, choice in self.recorder.choices.items():
            seen = sent[index] = Sent()
            seen.chars, seen.tokens, seen.ended = choice.chars, len(choice.token_ids), choice.finished
        return sent


class SingleFlight:
    """The open flights by exact key, and what happens to them.

    ``store(entry)`` keeps a finished answer; ``hand_off(flow)`` sends an elected leader's request
    to the engine; ``abort_engine(ids)`` aborts engine requests nobody reads any more.
    """

    def __init__(
        self,
        store: Callable[[CacheEntry], None],
        hand_off: Callable[[RequestFlow], Awaitable[None]],
        spawn: Callable[[Awaitable[Any]], Any],
        max_entry_tokens: int,
    ) -> None:
        self._flights: dict[str, Flight] = {}
        self._store = store
        self._hand_off = hand_off
        self._spawn = spawn
        self._max_entry_tokens = max_entry_tokens
        self.elections = 0

    def __len__(self) -> int:
        return len(self._flights)

    def all(self) -> list[Flight]:
        """The open shared flights."""
        return list(self._flights.values())

    def open(self, key: RequestKey) -> Flight | None:
        flight = self._flights.get(key.exact)
        return flight if flight is not None and not flight.done else None

    # -- leading and following ---------------------------------------------------------------

    def lead(self, flow: RequestFlow, shared: bool = True) -> Flight:
        """Open a flight driven by ``flow``; ``shared``: identical requests may join it (call only
        when :meth:`open` is None for the key)."""
        assert flow.plan is not None and flow.plan.key is not None
        flight = Flight(flow.plan.key, flow, self)
        if shared:
            self._flights[flow.plan.key.exact] = flight
        flow.role = Role.LEADER
        return flight

    def follow(self, flight: Flight, flow: RequestFlow) -> None:
        """``flow`` reads ``flight``: at once if it is live, else once its answer is decided."""
        flow.flight = flight
        flow.mark(Role.FOLLOWER, "coalesced")
        flight.followers.append(flow)
        flight.store = flight.store or bool(flow.plan and flow.plan.store)
        if flight.live:
            flow.feed(flight.recorder)

    def go_live(self, flight: Flight) -> None:
        """The engine's outputs are the answer: followers read them from here on (catching up first)."""
        if flight.live:
            return
        flight.live = True
        for follower in list(flight.followers):
            follower.feed(flight.recorder)

    # -- the driver's outputs ----------------------------------------------------------------

    def record(self, flight: Flight, output: Any) -> None:
        """An output (or an exception) of the driver's engine request."""
        if flight.done:
            return
        if isinstance(output, BaseException):
            self.fail(flight, output)
            return
        flight.recorder.record(output)
        if flight.live:
            for follower in list(flight.followers):
                follower.feed(flight.recorder)
        if output.finished:
            self._finish(flight)

    def _finish(self, flight: Flight) -> None:
        """The generation ended: close the flight first (nothing can leave it unresolved), then store."""
        self._close(flight)
        entry = flight.recorder.entry(flight.key, self._max_entry_tokens) if flight.store else None
        if entry is None:
            return
        try:
            self._store(entry)
        except Exception:  # a store that raises costs the entry, never the requests
            logger.exception("storing a finished answer failed")

    def resolve(self, flight: Flight, entry: CacheEntry, source: str, level: str | None = None) -> None:
        """The driver was answered without generating (a Redis or semantic hit): so are its followers."""
        self._close(flight)
        for follower in flight.followers:
            if follower.ended:
                continue
            follower.mark(Role.FOLLOWER, "coalesced", cache_source=source, cache_level=level)
            follower.answer_with(entry)

    def fail(self, flight: Flight, error: BaseException) -> None:
        """The driver failed (or left before its engine request started): followers that saw nothing
        get one new leader; the others fail as the driver did."""
        self._close(flight)
        waiting = []
        for follower in flight.followers:
            if follower.ended:
                continue
            if follower.streamed or isinstance(error, EngineDeadError):
                follower.fail(error)
            else:
                waiting.append(follower)
        if not waiting:
            return
        leader, rest = waiting[0], waiting[1:]
        self.elections += 1
        logger.debug("flight for %s failed (%r): %s leads %d follower(s)", flight.key.exact, error, leader.request_id, len(rest))
        leader.flight, leader.sent = None, {}
        new = self.lead(leader)
        new.followers.extend(rest)
        for follower in rest:
            follower.flight = new
            new.store = new.store or bool(follower.plan and follower.plan.store)
        self._spawn(self._elected(leader))

    async def _elected(self, leader: RequestFlow) -> None:
        """The elected leader generates for its flight; if it cannot, its flight fails with it."""
        flight = leader.flight
        assert flight is not None
        try:
            await self._hand_off(leader)
        except BaseException as exc:
            error = exc if isinstance(exc, Exception) else EngineDeadError("shutting down")
            self._close(flight)
            for flow in (leader, *flight.followers):
                flow.fail(error)
            if not isinstance(exc, Exception):
                raise
            return
        self.go_live(flight)

    def _close(self, flight: Flight) -> None:
        flight.done = True
        if self._flights.get(flight.key.exact) is flight:
            del self._flights[flight.key.exact]

    # -- readers leaving -------------------------------------------------------------------------

    def leave(self, flow: RequestFlow) -> bool:
        """``flow``'s reader aborts. True when nobody reads the flight's engine request any more:
        the caller then aborts it (and vLLM sends a leaving driver its own abort output)."""
        flight = flow.flight
        assert flight is not None
        if flow is flight.driver:
            if any(not f.ended for f in flight.followers):  # they read on: the engine request runs on
                flow.sent = flight.driver_sent()
                flow.feed(flight.recorder, abort=True)
                flow.reader_gone = True
                return False
            return True
        if flow in flight.followers:
            flow.feed(flight.recorder, abort=True)
            flight.followers.remove(flow)
        return not flight.done and flight.readers == 0
