"""EnhancedRequestOutputCollector: vLLM's per-request output queue, with metadata.

It is a ``RequestOutputCollector``, so ``AsyncLLM.generate()`` reads it with
``get_nowait()`` / ``get()`` exactly as before. On top of that:

* every ``RequestOutput`` it hands out carries ``.metadata`` (see
  :class:`~enhanced_llm.metadata.OutputMetadata`);
* an optional *observer* sees each output the engine puts in, in order, before
  any merging: the engine uses it to store finished answers;
* ``aiter()`` / ``get_outputs()`` yield :class:`EnhancedOutput` items
  (``.text``, ``.finished``, ``.metadata``, ``.error``) and turn errors into an
  item with ``.error`` set instead of raising (the v2 handler API).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from vllm.outputs import RequestOutput
from vllm.sampling_params import RequestOutputKind
from vllm.v1.engine.output_processor import RequestOutputCollector

from .metadata import OutputMetadata

__all__ = ["EnhancedOutput", "EnhancedRequestOutputCollector"]

logger = logging.getLogger(__name__)

Observer = Callable[[Any], None]


@dataclass(slots=True)
class EnhancedOutput:
    """One item of :meth:`EnhancedRequestOutputCollector.aiter`."""

    text: str
    """Text of the first choice (a delta in DELTA mode)."""
    finished: bool
    metadata: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    """Set (and ``finished`` True) when the request failed."""
    request_output: RequestOutput | None = None
    """The underlying vLLM output (all choices, token ids ...)."""

    @property
    def outputs(self) -> list[Any]:
        return [] if self.request_output is None else self.request_output.outputs


class EnhancedRequestOutputCollector(RequestOutputCollector):
    """A ``RequestOutputCollector`` that stamps metadata and lets the engine observe outputs."""

    def __init__(
        self,
        output_kind: RequestOutputKind,
        request_id: str,
        metadata: OutputMetadata | None = None,
        observer: Observer | None = None,
    ) -> None:
        super().__init__(output_kind, request_id)
        self.metadata = metadata or OutputMetadata()
        self.observer = observer
        self.delivered = 0  #: outputs handed to the reader so far
        self.first_put = asyncio.Event()  #: set when the engine (or the cache) put the first output
        self._gate: asyncio.Event | None = None
        self._sealed = False
        self._reader_gone = False
        self._enrichment: list[asyncio.Task] = []
        self._enrichment_timeout = 0.0

    @classmethod
    def finished_with(
        cls, output: RequestOutput, output_kind: RequestOutputKind, request_id: str, metadata: OutputMetadata
    ) -> EnhancedRequestOutputCollector:
        """A collector already holding one finished output (a cache answer)."""
        collector = cls(output_kind, request_id, metadata)
        collector.put(output)
        return collector

    # -- producer side -----------------------------------------------------------------------

    def put(self, output: Any) -> None:
        self.first_put.set()
        if self._sealed:  # answered from the semantic cache: the aborted engine request is ignored
            return
        if self.observer is not None:
            try:
                self.observer(output)
            except Exception:  # observing must never break the stream
                logger.exception("output observer failed for %s", self.request_id)
        if self._reader_gone:  # aborted by its reader; the engine request runs on for the observer
            return
        if isinstance(output, RequestOutput) and output.finished:
            self.metadata.finished_at = time.perf_counter()
        super().put(output)

    def take_over(self, output: RequestOutput) -> None:
        """Replace the engine's stream by this finished output (a semantic hit before the first token)."""
        self._sealed = True
        self.first_put.set()
        self.observer = None
        self.output = None
        self.metadata.finished_at = time.perf_counter()
        super().put(output)

    def end_for_reader(self, final: RequestOutput) -> None:
        """Give the reader ``final`` (its abort) while the engine request runs on: later outputs
        reach only the observer (coalesced followers are still reading them)."""
        super().put(final)
        self.metadata.finished_at = time.perf_counter()
        self._reader_gone = True

    # -- holding outputs back ------------------------------------------------------------------

    def hold(self) -> None:
        """Hold engine outputs back until :meth:`release` (the semantic race runs meanwhile)."""
        self._gate = asyncio.Event()

    def release(self) -> None:
        if self._gate is not None:
            self._gate.set()

    def add_enrichment(self, task: asyncio.Task, timeout: float) -> None:
        """The finished output waits (at most ``timeout`` s) for ``task`` to fill in metadata."""
        self._enrichment.append(task)
        self._enrichment_timeout = max(self._enrichment_timeout, timeout)

    def _held(self) -> bool:
        if self._gate is not None and not self._gate.is_set():
            return True
        output = self.output
        return (
            isinstance(output, RequestOutput) and output.finished
            and any(not task.done() for task in self._enrichment)
        )

    # -- consumer side (vLLM's generate loop) --------------------------------------------------

    async def get(self) -> Any:
        if self._gate is not None:
            await self._gate.wait()
        output = await super().get()
        if output.finished and self._enrichment:
            await asyncio.wait(self._enrichment, timeout=self._enrichment_timeout)
        return self._stamp(output)

    def get_nowait(self) -> Any:
        if self._held():
            return None
        output = super().get_nowait()
        return None if output is None else self._stamp(output)

    def _stamp(self, output: Any) -> Any:
        self.delivered += 1
        output.metadata = self.metadata.as_dict()
        return output

    # -- the v2 iteration API ------------------------------------------------------------------

    async def aiter(self) -> AsyncIterator[EnhancedOutput]:
        """Yield outputs until the finished one; an error becomes a final item with ``.error``."""
        while True:
            try:
                output = self.get_nowait() or await self.get()
            except Exception as exc:
                yield EnhancedOutput("", True, self.metadata.as_dict(), f"{type(exc).__name__}: {exc}")
                return
            first = output.outputs[0] if getattr(output, "outputs", None) else None
            yield EnhancedOutput(
                text=first.text if first is not None else "",
                finished=output.finished,
                metadata=output.metadata,
                request_output=output,
            )
            if output.finished:
                return

    def get_outputs(self) -> AsyncIterator[EnhancedOutput]:
        """The seed documents' name for :meth:`aiter`."""
        return self.aiter()

