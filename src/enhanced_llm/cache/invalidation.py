"""Forgetting answers, on every replica.

A wrong answer must be removable (an operator, a feedback button), and a removal must reach every
replica sharing the Redis, including the copies their memory levels hold. Two mechanisms:

* **One entry**: deleted from memory and Redis here, and announced on a Redis stream; every
  replica following the stream drops its memory copy (its vector goes the same way through the
  semantic store's own change stream).
* **A whole scope, or everything**: entries are not enumerable by tenant (keys are hashes), so
  each scope has an *epoch* that is part of every key of that scope; forgetting the scope raises
  the epoch (``HINCRBY`` in Redis, announced on the stream), and every old entry becomes
  unreachable at once on every replica. They expire with their TTL. ``forget_all`` raises a
  global epoch the same way: everything written before is never read again (use it when the
  model's weights changed in place, or after a bad deployment).

Redis layout (one hash tag, so both keys live on one cluster node):
``{<prefix>:invalidation}:epochs`` (hash: ``scope:<name>`` / ``all`` -> epoch) and
``{<prefix>:invalidation}:stream`` (stream of ``{op, key|field, value, origin}``).

Fail-open like the rest of the cache: when Redis is down the epochs and removals apply to this
process at once and to the others when Redis is back (a replica re-reads the epochs then).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from typing import Any

from ..errors import CacheBackendError
from .redis_store import RedisGuard

__all__ = ["Invalidations"]

logger = logging.getLogger(__name__)

_ALL = "all"


def _field(scope: str) -> str:
    return f"scope:{scope}"


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class Invalidations:
    """The epochs of this cache's scopes and the removals other replicas announce."""

    def __init__(
        self,
        client: Any = None,
        prefix: str = "enhanced_llm",
        *,
        timeout: float = 0.25,
        retry_after: float = 1.0,
        on_key: Callable[[str], None] | None = None,
        on_all: Callable[[], None] | None = None,
        block_ms: int = 1000,
    ) -> None:
        self.client = client
        tag = f"{{{prefix}:invalidation}}"
        self.epochs_key, self.stream_key = f"{tag}:epochs", f"{tag}:stream"
        self.guard = RedisGuard(timeout, retry_after)
        self.on_key, self.on_all = on_key, on_all
        # A blocking XREAD must return before the client's socket timeout (which is the Redis call
        # timeout: ``make_redis_client(timeout=...)``), or every read fails and nothing is followed.
        self.block_ms = max(1, min(block_ms, int(timeout * 1000 / 2)))
        self.origin = uuid.uuid4().hex
        self._epochs: dict[str, int] = {}
        self._last_id = "$"
        self._task: asyncio.Task | None = None
        self.stats = {"forgotten": 0, "scopes_forgotten": 0, "applied_from_replicas": 0, "errors": 0}

    # -- what keys depend on --------------------------------------------------------------------

    def epoch(self, scope: str) -> tuple[int, int]:
        """(global epoch, scope epoch): part of every key of ``scope``."""
        return self._epochs.get(_ALL, 0), self._epochs.get(_field(scope), 0)

    # -- forgetting ---------------------------------------------------------------------------

    async def announce_key(self, key: str) -> None:
        """Tell the other replicas to drop their memory copy of ``key``."""
        self.stats["forgotten"] += 1
        await self._announce({"op": "key", "key": key})

    async def raise_epoch(self, scope: str | None) -> int:
        """Make every entry of ``scope`` (None: of every scope) unreachable, here and on the replicas."""
        field = _ALL if scope is None else _field(scope)
        value = self._epochs.get(field, 0) + 1
        if self.client is not None and self.guard.available:
            try:
                value = int(await self.guard.call(self.client.hincrby(self.epochs_key, field, 1)))
            except CacheBackendError as exc:  # fail open: at least this process forgets now
                self._count_error(exc)
        self._epochs[field] = max(value, self._epochs.get(field, 0) + 1)
        self.stats["scopes_forgotten"] += 1
        if scope is None and self.on_all is not None:
            self.on_all()
        await self._announce({"op": "epoch", "field": field, "value": str(self._epochs[field])})
        return self._epochs[field]

    async def _announce(self, event: dict[str, str]) -> None:
        if self.client is None or not self.guard.available:
            return
        try:
            await self.guard.call(self.client.xadd(self.stream_key, {**event, "origin": self.origin}, maxlen=10_000, approximate=True))
        except CacheBackendError as exc:
            self._count_error(exc)

    # -- following the other replicas --------------------------------------------------------------

    async def start(self) -> None:
        """Read the current epochs and follow the stream (no-op without Redis)."""
        if self.client is None or self._task is not None:
            return
        await self._load()
        self._task = asyncio.get_running_loop().create_task(self._follow(), name="cache-invalidations")

    async def _load(self) -> None:
        """Note the stream's position, then read the epochs (so nothing announced meanwhile is missed)."""
        try:
            last = await self.guard.call(self.client.xrevrange(self.stream_key, count=1))
            self._last_id = _text(last[0][0]) if last else "0-0"
            epochs = await self.guard.call(self.client.hgetall(self.epochs_key))
        except CacheBackendError as exc:
            self._count_error(exc)
            return
        for field, value in (epochs or {}).items():
            try:
                self._epochs[_text(field)] = max(self._epochs.get(_text(field), 0), int(value))
            except (TypeError, ValueError):  # not ours: ignored
                self.stats["errors"] += 1

    async def _follow(self) -> None:
        reload = False
        while True:
            try:
                if reload:
                    await self._load()
                    reload = False
                response = await self.guard.call(
                    self.client.xread({self.stream_key: self._last_id}, count=500, block=self.block_ms),
                    timeout=self.block_ms / 1000 + self.guard.timeout,
                )
            except asyncio.CancelledError:
                raise
            except CacheBackendError as exc:  # Redis away: catch up from the epochs once it is back
                self._count_error(exc)
                reload = True
                await asyncio.sleep(self.guard.retry_after)
                continue
            for _stream, messages in response or []:
                for message_id, fields in messages:
                    self._last_id = _text(message_id)
                    self._apply({_text(k): _text(v) for k, v in fields.items()})

    def _apply(self, event: dict[str, str]) -> None:
        if event.get("origin") == self.origin:
            return
        self.stats["applied_from_replicas"] += 1
        try:
            if event.get("op") == "key" and event.get("key") and self.on_key is not None:
                self.on_key(event["key"])
            elif event.get("op") == "epoch" and event.get("field"):
                field, value = event["field"], int(event.get("value", "0"))
                if value > self._epochs.get(field, 0):
                    self._epochs[field] = value
                    if field == _ALL and self.on_all is not None:
                        self.on_all()
        except (TypeError, ValueError):  # a malformed event is skipped
            self.stats["errors"] += 1

    def _count_error(self, exc: Exception) -> None:
        self.stats["errors"] += 1
        logger.debug("cache invalidation: %s", exc)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task], timeout=2.0)
            self._task = None
