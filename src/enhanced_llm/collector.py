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
        if self.observer is not None:
            try:
                self.observer(output)
            except Exception:  # observing must never break the stream
                logger.exception("output observer failed for %s", self.request_id)
        if isinstance(output, RequestOutput) and output.finished:
            self.metadata.finished_at = time.perf_counter()
        super().put(output)

    # -- consumer side (vLLM's generate loop) --------------------------------------------------

    async def get(self) -> Any:
        return self._stamp(await super().get())

    def get_nowait(self) -> Any:
        output = super().get_nowait()
        return None if output is None else self._stamp(output)

    def _stamp(self, output: Any) -> Any:
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

