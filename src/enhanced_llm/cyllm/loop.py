"""An asyncio event loop on its own thread, driven from synchronous code."""

from __future__ import annotations

import asyncio
import concurrent.futures
import queue
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, TypeVar

__all__ = ["LoopThread"]

T = TypeVar("T")

_ITEM, _ERROR, _END = 0, 1, 2


class LoopThread:
    """A daemon thread running one event loop; the engine lives on it.

    ``run(coro)`` waits for a coroutine's result; ``iterate(agen)`` turns an async
    iterator into a synchronous one, item by item as they are produced. Closing the
    synchronous iterator early cancels the task that drives the async one.
    """

    def __init__(self, name: str = "cyllm-engine-loop") -> None:
        self.loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()
        self._started.wait()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._started.set)
        try:
            self.loop.run_forever()
        finally:
            self.loop.close()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and not self.loop.is_closed()

    def run(self, coro: Awaitable[T], timeout: float | None = None) -> T:
        """Run ``coro`` on the loop and return its result (re-raising its exception)."""
        future = asyncio.run_coroutine_threadsafe(_as_coroutine(coro), self.loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(f"engine call did not finish within {timeout} s") from None

    def iterate(
        self, agen: AsyncIterator[T], on_close: Callable[[], Awaitable[Any]] | None = None, close_timeout: float = 10.0
    ) -> Iterator[T]:
        """Yield ``agen``'s items as the loop produces them.

        The items pass through an unbounded queue.Queue (bounded in practice by what
        the async iterator produces: one request's chunks). When the consumer stops
        early (``close()``, garbage collection, an exception) the driving task is
        cancelled and ``on_close()`` runs on the loop; both are awaited up to
        ``close_timeout`` seconds.
        """
        items: queue.Queue[tuple[int, Any]] = queue.Queue()

        async def pump() -> None:
            try:
                async for item in agen:
                    items.put((_ITEM, item))
            except asyncio.CancelledError:
                raise
            except BaseException as exc:  # noqa: BLE001 - handed to the consumer
                items.put((_ERROR, exc))
            else:
                items.put((_END, None))

        future = asyncio.run_coroutine_threadsafe(pump(), self.loop)
        finished = False
        try:
            while True:
                try:
                    kind, value = items.get(timeout=1.0)
                except queue.Empty:
                    if not self.alive:
                        raise RuntimeError("the engine's event loop stopped") from None
                    continue
                if kind == _ITEM:
                    yield value
                elif kind == _ERROR:
                    finished = True
                    raise value
                else:
                    finished = True
                    return
        finally:
            if not finished and self.alive:
                self._stop(future, on_close, close_timeout)

    def _stop(self, future: concurrent.futures.Future, on_close: Callable[[], Awaitable[Any]] | None, timeout: float) -> None:
        future.cancel()
        try:
            future.result(timeout)
        except (concurrent.futures.CancelledError, concurrent.futures.TimeoutError, Exception):
            pass
        if on_close is not None:
            try:
                self.run(on_close(), timeout)
            except Exception:  # noqa: BLE001 - closing must not raise into the caller's cleanup
                pass

    def stop(self, timeout: float = 10.0) -> None:
        """Cancel what still runs on the loop, stop it and join the thread (idempotent)."""
        if not self.alive:
            return

        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        try:
            self.run(cancel_all(), timeout)
        except Exception:  # noqa: BLE001
            pass
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout)


async def _as_coroutine(awaitable: Awaitable[T]) -> T:
    return await awaitable
