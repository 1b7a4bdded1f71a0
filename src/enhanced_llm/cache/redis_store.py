"""Level 2: Redis through ``redis.asyncio``, with per-call timeouts, a circuit breaker and bounded reads.

Every method either completes within its time budget or raises
:class:`~enhanced_llm.errors.CacheBackendError`. After a failure the store
reports itself unavailable for ``retry_after`` seconds, so a dead Redis costs
requests nothing; the connection pool reconnects by itself when Redis is back.
A call that only waited for a free pooled connection and did not get one in
time is :class:`RedisBusy`: counted apart, and the circuit stays closed.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from ..errors import CacheBackendError
from .redis_client import WAITING, RedisBusyError, make_redis_client

__all__ = ["RedisGuard", "RedisStore", "RedisBusy", "make_redis_client"]


class RedisBusy(CacheBackendError):
    """Every pooled connection was in use for the whole wait: not a Redis failure (no circuit opened)."""


class RedisGuard:
    """A per-call timeout and a circuit breaker, shared by every Redis user of the library.

    ``call`` awaits one Redis command for at most ``timeout`` (+ ``pool_timeout``, the longest wait
    for a pooled connection) seconds; a failure is counted, opens the circuit for ``retry_after``
    seconds (``available`` is False, so callers skip Redis) and is raised as
    :class:`CacheBackendError`. A wait for a connection that runs out is counted in ``busy`` and
    raised as :class:`RedisBusy`, leaving the circuit closed.
    """

    def __init__(self, timeout: float, retry_after: float, pool_timeout: float = 0.0) -> None:
        self.timeout = timeout
        self.retry_after = retry_after
        self.pool_timeout = pool_timeout
        self.errors = 0
        self.busy = 0
        self._down_until = 0.0

    @property
    def available(self) -> bool:
        """False while the circuit is open after a recent failure."""
        return time.monotonic() >= self._down_until

    def close_circuit(self) -> None:
        """Redis answered again (a health probe): stop skipping it."""
        self._down_until = 0.0

    async def call(self, awaitable: Any, timeout: float | None = None) -> Any:
        WAITING.set(False)
        try:
            async with _Deadline((timeout or self.timeout) + self.pool_timeout):
                result = await awaitable
        except RedisBusyError as exc:
            self.busy += 1
            raise RedisBusy(f"redis busy: {exc}") from exc
        except TimeoutError as exc:
            if WAITING.get():  # the deadline ran out while waiting for a pooled connection
                WAITING.set(False)
                self.busy += 1
                raise RedisBusy("redis busy: no free connection in time") from exc
            self.errors += 1
            self._down_until = time.monotonic() + self.retry_after
            raise CacheBackendError(f"redis call timed out after {(timeout or self.timeout) + self.pool_timeout:.3f}s") from exc
        except Exception as exc:  # redis errors, OSError, TimeoutError
            self.errors += 1
            self._down_until = time.monotonic() + self.retry_after
            raise CacheBackendError(f"redis call failed: {type(exc).__name__}: {exc}") from exc
        _reraise_swallowed_cancel()
        return result


_STALL = 0.02  # a deadline handled this late means the event loop itself was busy
_GRACE_TURNS = 3


class _Deadline:
    """``asyncio.timeout(seconds)`` that does not blame Redis for the event loop's own stalls.

    Under load (hundreds of requests being tokenized on the loop, a starved CPU) the loop can be
    busy past a call's deadline while Redis's reply already sits in the socket: a plain timeout
    cancels the call in the same loop turn that could have read it, and Redis is counted as
    failed. Here a deadline handled late (more than ``_STALL`` after it was due) grants the call
    up to ``_GRACE_TURNS`` more loop turns, so a reply that arrived during the stall is read; a
    Redis that really does not answer still times out, a few loop turns later.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    async def __aenter__(self) -> _Deadline:
        self._loop = asyncio.get_running_loop()
        self._timeout = asyncio.timeout(None)
        await self._timeout.__aenter__()
        self._due = self._loop.time() + self.seconds
        self._grace = _GRACE_TURNS
        self._handle: asyncio.Handle = self._loop.call_at(self._due, self._fire)
        return self

    def _fire(self) -> None:
        now = self._loop.time()
        if now - self._due > _STALL and self._grace > 0:
            self._grace -= 1
            self._due = now
            self._handle = self._loop.call_soon(self._fire)  # after the replies this turn delivers
            return
        self._timeout.reschedule(now)  # expire: the task is cancelled, __aexit__ raises TimeoutError

    async def __aexit__(self, *exc: Any) -> bool | None:
        self._handle.cancel()
        return await self._timeout.__aexit__(*exc)


def _reraise_swallowed_cancel() -> None:
    """redis.asyncio (seen with 8.1) can swallow a task's cancellation: the command returns
    normally although ``task.cancel()`` was called during it (about 4 in 10 cancellations of a
    GET in a loop here). A request whose client went away would then go on to the engine. The
    task still counts the request (``cancelling()``), so the cancellation is raised again."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError()


class RedisStore:
    """Bytes in, bytes out, under ``{prefix}:entry:{key}`` (one key per command: cluster-safe)."""

    def __init__(
        self, client: Any, prefix: str, timeout: float = 0.25, retry_after: float = 1.0,
        *, pool_timeout: float = 0.25, max_value_bytes: int = 16 << 20,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.timeout = timeout
        self.max_value_bytes = max_value_bytes
        self.guard = RedisGuard(timeout, retry_after, pool_timeout)

    def entry_key(self, key: str) -> str:
        return f"{self.prefix}:entry:{key}"

    @property
    def available(self) -> bool:
        return self.guard.available

    @property
    def errors(self) -> int:
        return self.guard.errors

    async def get(self, key: str) -> bytes | None:
        """The value, or None when there is none. At most ``max_value_bytes + 1`` bytes are read
        (``GETRANGE``): a longer result means the value is over the bound, and the caller refuses it."""
        data = await self._call(self.client.getrange, self.entry_key(key), 0, self.max_value_bytes)
        return data or None  # GETRANGE of a missing key is b"" (and an empty value is never ours)

    async def set(self, key: str, value: bytes, ttl: float | None) -> None:
        px = None if ttl is None else max(1, int(ttl * 1000))
        await self._call(self.client.set, self.entry_key(key), value, px=px)

    async def delete(self, key: str) -> None:
        await self._call(self.client.delete, self.entry_key(key))

    async def ping(self) -> bool:
        """A real round trip, ignoring the circuit (used by health checks)."""
        try:
            async with asyncio.timeout(self.timeout + self.guard.pool_timeout):
                await self.client.ping()
        except Exception:
            return False
        self.guard.close_circuit()
        return True

    async def close(self) -> None:
        try:
            await self.client.aclose()
        except Exception:  # closing a broken pool must not fail shutdown
            pass

    async def _call(self, method: Any, *args: Any, **kwargs: Any) -> Any:
        if not self.guard.available:
            raise CacheBackendError("redis skipped: recent failure")
        return await self.guard.call(method(*args, **kwargs))
