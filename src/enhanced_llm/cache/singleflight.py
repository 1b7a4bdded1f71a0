"""Coalescing of identical in-flight requests.

The first request for a key leads: it goes to the engine. Identical requests
arriving while it runs follow: they wait for its entry instead of generating.
If the leader ends without an entry (aborted, failed, not storable), the
followers get ``None`` and run on their own. A flight may carry the leader's
live stream (:meth:`SingleFlight.attach`), so that streaming followers can see
its tokens as they come instead of waiting for the whole answer.
"""

from __future__ import annotations

import asyncio
from typing import Any

from .entry import CacheEntry

__all__ = ["SingleFlight"]


class SingleFlight:
    def __init__(self) -> None:
        self._flights: dict[str, asyncio.Future[CacheEntry | None]] = {}
        self._streams: dict[str, Any] = {}

    def join(self, key: str) -> asyncio.Future[CacheEntry | None] | None:
        """The running flight for ``key``, if any."""
        return self._flights.get(key)

    def lead(self, key: str) -> asyncio.Future[CacheEntry | None]:
        """Start a flight for ``key`` (call only when :meth:`join` returned None)."""
        future: asyncio.Future[CacheEntry | None] = asyncio.get_running_loop().create_future()
        self._flights[key] = future
        return future

    def land(self, key: str, future: asyncio.Future[CacheEntry | None], entry: CacheEntry | None) -> None:
        """End the flight with its entry (or None); idempotent."""
        if self._flights.get(key) is future:
            del self._flights[key]
            self._streams.pop(key, None)
        if not future.done():
            future.set_result(entry)

    def attach(self, key: str, stream: Any) -> None:
        """Publish the running flight's live stream (the leader's recorder)."""
        if key in self._flights:
            self._streams[key] = stream

    def stream(self, key: str) -> Any:
        """The live stream of the running flight for ``key``, if one was attached."""
        return self._streams.get(key)

    def __len__(self) -> int:
        return len(self._flights)
