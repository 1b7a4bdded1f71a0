"""The server's engine: per-request options from the HTTP layer, and a shutdown that wakes every waiter."""

from __future__ import annotations

import asyncio
from typing import Any

from vllm.outputs import CompletionOutput
from vllm.pooling_params import PoolingParams
from vllm.v1.engine.output_processor import RequestOutputCollector

from ..answers import request_output
from ..engine import EnhancedAsyncLLM, stages
from .context import _REQUEST, merge_request_options


class ServingEnhancedAsyncLLM(EnhancedAsyncLLM):
    """``EnhancedAsyncLLM`` for the server: per-request options from the HTTP layer, clean shutdown.

    * ``add_request`` merges the request context's scope and flat ``vllm_xargs``
      options into ``extra_args["enhanced_llm"]`` and records the outcome for the
      response headers (see the module docstring).
    * ``shutdown`` ends requests still waiting for output with ``EngineDeadError``.
      vLLM's ``serve_http`` stops the engine core on SIGINT/SIGTERM (``--shutdown-timeout
      0``, the default: at once; ``N``: after letting running requests finish for up
      to N seconds) but nothing then wakes the requests still waiting, so their HTTP
      connections, and uvicorn's shutdown, would hang until the clients gave up.
    """

    _serving_loop: asyncio.AbstractEventLoop | None = None

    async def add_request(self, request_id: str, prompt: Any, params: Any, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        if self._serving_loop is None:
            self._serving_loop = asyncio.get_running_loop()
        ctx = _REQUEST.get()
        if ctx is not None and not isinstance(params, PoolingParams):
            params = merge_request_options(params, ctx)
            if ctx.forgotten is not None:
                return await self._forget_instead(request_id, prompt, params, args, kwargs, ctx.forgotten)
        collector = await super().add_request(request_id, prompt, params, *args, **kwargs)
        if ctx is not None and (meta := getattr(collector, "metadata", None)) is not None:
            ctx.outcomes.append(meta)
        return collector

    async def _forget_instead(
        self, request_id: str, prompt: Any, params: Any, args: tuple, kwargs: dict[str, Any], forgotten: list[bool]
    ) -> RequestOutputCollector:
        """``DELETE /v1/cache``: vLLM's own handler turned the body into this request (same prompt
        rendering and parameters as the generation it names); forget its answer and hand vLLM an
        empty finished output so that the handler ends normally."""
        found = await self.forget(prompt, params, **stages.bind_arguments(request_id, prompt, params, args, kwargs))
        forgotten.append(found)
        token_ids = list(prompt.get("prompt_token_ids") or [0]) if isinstance(prompt, dict) else [0]
        n = getattr(params, "n", 1) or 1
        outputs = [
            CompletionOutput(index=i, text="", token_ids=[], cumulative_logprob=None, logprobs=None, finish_reason="stop")
            for i in range(n)
        ]
        collector = RequestOutputCollector(params.output_kind, request_id)
        collector.put(request_output(request_id, None, token_ids, outputs, True, kwargs.get("lora_request")))
        return collector

    def shutdown(self, timeout: float | None = None) -> None:
        super().shutdown(timeout=timeout)
        loop = self._serving_loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._fail_unfinished()
        else:  # vLLM calls shutdown from an executor thread
            loop.call_soon_threadsafe(self._fail_unfinished)

    def _fail_unfinished(self) -> None:
        from vllm.v1.engine.exceptions import EngineDeadError

        error = EngineDeadError("the server is shutting down")
        self.fail_unfinished(error)  # our flows: followers and cached answers are not vLLM's requests
        queues = {id(state.queue): state.queue for state in list(self.output_processor.request_states.values())}
        for queue in queues.values():
            if queue is not None:
                queue.put(error)
