"""EnhancedRequestOutputCollector: vLLM's per-request output queue, with metadata.

It is a ``RequestOutputCollector``, so ``AsyncLLM.generate()`` reads it with
``get_nowait()`` / ``get()`` exactly as before. On top of that:

* every ``RequestOutput`` it hands out carries ``.metadata`` (see
  :class:`~enhanced_llm.metadata.OutputMetadata`);
* the engine's outputs go through the request's flow (see :mod:`enhanced_llm.engine.flow`),
  which records answers, feeds coalesced requests and decides what the reader gets;
* ``aiter()`` / ``get_outputs()`` yield :class:`EnhancedOutput` items
  (``.text``, ``.finished``, ``.metadata``, ``.error``) and turn errors into an
  item with ``.error`` set instead of raising (the v2 handler API).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from vllm.outputs import RequestOutput
from vllm.sampling_params import RequestOutputKind
from vllm.v1.engine.output_processor import RequestOutputCollector

from .metadata import OutputMetadata

__all__ = ["EnhancedOutput", "EnhancedRequestOutputCollector"]

logger = logging.getLogger(__name__)

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
    """A ``RequestOutputCollector`` that stamps metadata; the engine's outputs go through its request's flow.

    vLLM's output processor calls :meth:`put` with the engine's outputs. When the collector
    belongs to a :class:`~enhanced_llm.engine.flow.RequestFlow`, the flow decides what the reader
    is sent (it records the answer, feeds coalesced requests, ignores an engine request the
    semantic cache answered) and hands it over with :meth:`deliver`.
    """

    def __init__(
        self,
        output_kind: RequestOutputKind,
        request_id: str,
        metadata: OutputMetadata | None = None,
        flow: Any = None,
    ) -> None:
        super().__init__(output_kind, request_id)
        self.metadata = metadata or OutputMetadata()
        self.flow = flow
        self.delivered = 0  #: outputs handed to the reader so far
        self.first_put = asyncio.Event()  #: set when the first output (engine or cache) arrived
        self._gate: asyncio.Event | None = None
        self._enrichment: list[asyncio.Task] = []
        self._enrichment_timeout = 0.0

    # -- producer side -----------------------------------------------------------------------

    def put(self, output: Any) -> None:
        """An engine output (or error), from vLLM's output processor."""
        if self.flow is not None:
            self.flow.engine_output(output)
        else:
            self.deliver(output)

    def deliver(self, output: Any) -> None:
        """Queue ``output`` for the reader (merged with undelivered ones, as vLLM does)."""
        self.first_put.set()
        if isinstance(output, RequestOutput) and output.finished:
            self.metadata.finished_at = time.perf_counter()
        super().put(output)

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

