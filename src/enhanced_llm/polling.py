"""The polling API of the old handlers, on :class:`~enhanced_llm.handler.EnhancedVLLMHandler`.

:class:`LegacyPollingMixin` gives the handler the old pair:
``request_id = await handler.add_request(prompt, params)`` and
``await handler.get_result(request_id)``. Each request is read in the background into a
result record, kept ``HandlerConfig.result_ttl`` seconds after its last status change and
at most ``HandlerConfig.max_results`` records (least recently used dropped first).

``get_result`` returns ``None`` for an unknown or expired id (the old handlers did,
which is why old code reads ``if result and result["status"] == "COMPLETED"``);
otherwise a dict with ``status`` one of ``PENDING`` (accepted, no output yet),
``RUNNING`` (tokens arriving; ``text`` so far), ``COMPLETED`` or ``FAILED`` (``error``).
New code should use ``add_request_v2`` and stream the outputs instead of polling.

The old class names (``BaseVLLMHandler`` ...) are in :mod:`enhanced_llm.legacy`, which
builds on the handler; this module imports neither.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from cachetools import TTLCache

from .config import HandlerConfig

if TYPE_CHECKING:
    from .collector import EnhancedRequestOutputCollector

__all__ = ["ResultStatus", "LegacyPollingMixin"]

ResultStatus = Literal["PENDING", "RUNNING", "COMPLETED", "FAILED"]


@dataclass
class _Result:
    """One polled request; ``as_dict()`` is what ``get_result`` returns."""

    request_id: str
    status: ResultStatus = "PENDING"
    text: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    created_at: float = field(default_factory=time.time)
    finished_at: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id, "status": self.status, "text": self.text,
            "metadata": dict(self.metadata), "error": self.error,
            "created_at": self.created_at, "finished_at": self.finished_at,
        }

    def end(self, status: ResultStatus, error: str | None = None) -> None:
        self.status, self.error, self.finished_at = status, error, time.time()


class LegacyPollingMixin:
    """``add_request`` + ``get_result`` on top of ``add_request_v2`` (mixed into the handler)."""

    add_request_v2: Any  # provided by EnhancedVLLMHandler

    def _init_polling(self, config: HandlerConfig) -> None:
        self._results: TTLCache[str, _Result] = TTLCache(maxsize=config.max_results, ttl=config.result_ttl)
        self._pollers: dict[str, asyncio.Task] = {}

    async def add_request(
        self, prompt: Any, sampling_params: Any = None, request_id: str | None = None, **options: Any
    ) -> str:
        """Submit a request and return its id at once; poll :meth:`get_result` for the answer.

        Takes the options of ``add_request_v2`` (``scope``, ``cache``, ``lora_request`` ...).
        """
        request_id = request_id or uuid.uuid4().hex
        collector = await self.add_request_v2(prompt, sampling_params, request_id=request_id, **options)
        record = _Result(request_id)
        self._results[request_id] = record
        key = f"{request_id}#{id(record)}"
        task = asyncio.get_running_loop().create_task(self._read(record, collector))
        self._pollers[key] = task
        task.add_done_callback(lambda _: self._pollers.pop(key, None))
        return request_id

    async def get_result(self, request_id: str) -> dict[str, Any] | None:
        """The request's current record (a copy), or ``None`` for an unknown or expired id."""
        record = self._results.get(request_id)
        return None if record is None else record.as_dict()

    async def _read(self, record: _Result, collector: EnhancedRequestOutputCollector) -> None:
        delta = collector.aggregate  # DELTA outputs carry only the new text
        try:
            async for output in collector.aiter():
                if output.error is not None:
                    record.end("FAILED", output.error)
                    break
                record.text = record.text + output.text if delta else output.text
                record.metadata = output.metadata
                if output.finished:
                    record.end("COMPLETED")
                elif record.status == "PENDING":
                    record.status = "RUNNING"
                    self._keep(record)
        except asyncio.CancelledError:
            record.end("FAILED", "handler stopped")
            raise
        except Exception as exc:  # noqa: BLE001 - recorded for the poller
            record.end("FAILED", f"{type(exc).__name__}: {exc}")
        finally:
            self._keep(record)

    def _keep(self, record: _Result) -> None:
        """Restart the record's lifetime at a status change (unless it was dropped or its id reused)."""
        if self._results.get(record.request_id) is record:
            self._results[record.request_id] = record

    async def _stop_polling(self) -> None:
        tasks = list(self._pollers.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _polling_stats(self) -> dict[str, int]:
        return {"results_kept": len(self._results), "results_pending": len(self._pollers)}
