"""The CY-LLM engines: vLLM's ``AsyncLLM`` (plain or enhanced) on its own event-loop thread.

CY-LLM's worker calls ``infer()`` from synchronous code and iterates it; the engine
itself is asynchronous. Each engine object owns a :class:`LoopThread`: the ``AsyncLLM``
is built and runs there, and ``infer()`` drives one request on it, handing the text
chunks over as they are generated (``stream_chunk_size`` tokens each; a cached answer
comes back cut at the same token counts). Any number of threads may call ``infer()``
at once: the requests are batched by vLLM as usual.
"""

from __future__ import annotations

import gc
import logging
import threading
import uuid
from collections.abc import Generator
from typing import Any

from .base import BaseEngine
from .chunks import TextChunk, chunked_generate
from .generation import build_sampling_params, lora_request_for, split_infer_kwargs
from .loop import LoopThread
from .memory import engine_core_pids, memory_usage

__all__ = ["VllmAsyncEngine", "EnhancedVllmAsyncEngine"]

logger = logging.getLogger(__name__)

#: CY-LLM's default reservation on a GPU (seed 000); on a CPU the library's default KV size applies.
GPU_MEMORY_UTILIZATION = 0.75
LOAD_TIMEOUT_S = 900.0
UNLOAD_TIMEOUT_S = 120.0


class VllmAsyncEngine(BaseEngine):
    """Plain vLLM ``AsyncLLM`` behind CY-LLM's ``BaseEngine`` (engine type ``vllm-async``).

    Args:
        tensor_parallel_size: GPUs per model.
        gpu_memory_utilization: fraction of GPU memory vLLM reserves; None: 0.75 on a GPU
            (CY-LLM's default) and, on a CPU, the library's KV default (1 GiB) unless
            ``kv_cache_memory_bytes`` is given.
        stream_chunk_size: tokens per yielded chunk (CY-LLM's default 4).
        enable_true_streaming: accepted for CY-LLM configurations; these engines always
            stream as tokens are generated.
        **engine_kwargs: further vLLM engine arguments (``max_model_len``,
            ``kv_cache_memory_bytes``, ``enable_lora`` ...), overridable in ``load_model``.
    """

    engine_type = "vllm-async"

    def __init__(
        self,
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float | None = None,
        stream_chunk_size: int = 4,
        enable_true_streaming: bool = True,
        **engine_kwargs: Any,
    ) -> None:
        if stream_chunk_size < 1:
            raise ValueError("stream_chunk_size must be >= 1")
        self.tensor_parallel_size = tensor_parallel_size
        self.gpu_memory_utilization = gpu_memory_utilization
        self.stream_chunk_size = stream_chunk_size
        self.enable_true_streaming = enable_true_streaming
        self.engine_kwargs = engine_kwargs
        self.model_path: str | None = None
        self.adapter_path: str | None = None
        self._engine: Any = None
        self._loop: LoopThread | None = None
        self._lock = threading.Lock()

    # -- BaseEngine ----------------------------------------------------------------------------

    def load_model(self, model_path: str, adapter_path: str | None = None, **kwargs: Any) -> None:
        """Build and start the engine for ``model_path`` (a HF name, a path or ``embedded:tiny``).

        ``adapter_path`` becomes the default LoRA adapter of every ``infer()`` call (the
        engine is then started with ``enable_lora``). Keywords are vLLM engine arguments.
        """
        with self._lock:
            if self._engine is not None:
                raise RuntimeError(f"a model is already loaded ({self.model_path}); call unload_model() first")
            args = self._engine_args(dict(kwargs), adapter_path)
            loop = LoopThread()
            try:
                self._engine = loop.run(self._build(model_path, args), LOAD_TIMEOUT_S)
            except BaseException:
                loop.stop()
                raise
            self._loop, self.model_path, self.adapter_path = loop, model_path, adapter_path
            logger.info("%s engine loaded %s", self.engine_type, model_path)

    def infer(self, prompt: str, **kwargs: Any) -> Generator[str, None, None]:
        """Yield the answer in chunks of ``stream_chunk_size`` tokens as they are generated.

        Keywords: ``max_new_tokens`` (256), ``temperature`` (0.7), ``top_p`` (0.95),
        ``repetition_penalty`` (1.0), ``adapter_path`` (a LoRA adapter for this call), any
        other ``SamplingParams`` field (``seed``, ``stop``, ``ignore_eos`` ...), and for the
        enhanced engine ``cache_scope`` / ``cache_mode``. Closing the generator early
        aborts the request.
        """
        chunks = self.infer_chunks(prompt, **kwargs)
        try:
            for chunk in chunks:
                if chunk.text:
                    yield chunk.text
        finally:
            chunks.close()  # an early close of this generator aborts the request now

    def infer_chunks(self, prompt: str, **kwargs: Any) -> Generator[TextChunk, None, None]:
        """As :meth:`infer`, yielding :class:`~enhanced_llm.cyllm.chunks.TextChunk` objects
        (text, index, offset, tokens, ``finish_reason`` on the last, the engine's metadata)."""
        engine, loop = self._require()
        options, cache, adapter, extra = split_infer_kwargs(dict(kwargs))
        params = build_sampling_params(options, scope=cache.get("scope"), cache_mode=cache.get("cache"), **extra)
        lora = lora_request_for(adapter or self.adapter_path)
        request_id = f"cyllm-{uuid.uuid4().hex}"
        chunks = chunked_generate(engine, prompt, params, request_id, self.stream_chunk_size, lora)
        yield from loop.iterate(chunks, on_close=lambda: engine.abort(request_id))

    def unload_model(self) -> None:
        """Stop the engine core process(es), the event-loop thread, and free memory (idempotent)."""
        with self._lock:
            engine, loop = self._engine, self._loop
            self._engine = self._loop = None
            if engine is None or loop is None:
                return
            pids = engine_core_pids(engine)
            try:
                loop.run(self._close(engine), UNLOAD_TIMEOUT_S)
            finally:
                loop.stop()
                del engine
                _wait_gone(pids)
                gc.collect()
                _empty_device_cache()
            logger.info("%s engine unloaded %s", self.engine_type, self.model_path)

    def get_memory_usage(self) -> dict[str, float]:
        """See :func:`enhanced_llm.cyllm.memory.memory_usage` (process RSS only when nothing is loaded)."""
        return memory_usage(self._engine)

    # -- extras ---------------------------------------------------------------------------------

    @property
    def loaded(self) -> bool:
        return self._engine is not None

    @property
    def async_engine(self) -> Any:
        """The ``AsyncLLM`` (lives on this engine's loop thread: use :meth:`run` to call it)."""
        return self._require()[0]

    def run(self, coro: Any, timeout: float | None = 60.0) -> Any:
        """Run a coroutine on the engine's loop (e.g. ``engine.run(engine.async_engine.check_health())``)."""
        return self._require()[1].run(coro, timeout)

    def _require(self) -> tuple[Any, LoopThread]:
        engine, loop = self._engine, self._loop
        if engine is None or loop is None:
            raise RuntimeError("no model loaded: call load_model() first")
        return engine, loop

    def _engine_args(self, kwargs: dict[str, Any], adapter_path: str | None) -> dict[str, Any]:
        from vllm.platforms import current_platform

        args = {"tensor_parallel_size": self.tensor_parallel_size, **self.engine_kwargs, **kwargs}
        utilization = args.pop("gpu_memory_utilization", self.gpu_memory_utilization)
        if utilization is None and not current_platform.is_cpu() and "kv_cache_memory_bytes" not in args:
            utilization = GPU_MEMORY_UTILIZATION
        if utilization is not None:
            args["gpu_memory_utilization"] = utilization
        if adapter_path:
            args.setdefault("enable_lora", True)
        return args

    async def _build(self, model_path: str, args: dict[str, Any]) -> Any:
        from vllm.v1.engine.async_llm import AsyncLLM

        return AsyncLLM.from_engine_args(_to_engine_args(model_path, args))

    async def _close(self, engine: Any) -> None:
        import asyncio

        await asyncio.to_thread(engine.shutdown)


class EnhancedVllmAsyncEngine(VllmAsyncEngine):
    """:class:`~enhanced_llm.engine.EnhancedAsyncLLM` behind ``BaseEngine`` (``enhanced-vllm-async``, the default).

    Besides the engine arguments it takes the library's ``cache_config``,
    ``similarity_config`` and ``handler_config`` (constructor or ``load_model`` keywords);
    by default the exact cache in memory.
    """

    engine_type = "enhanced-vllm-async"

    _ENHANCEMENT_KEYS = ("cache_config", "similarity_config", "handler_config")

    async def _build(self, model_path: str, args: dict[str, Any]) -> Any:
        from ..engine import EnhancedAsyncLLM

        enhancements = {k: args.pop(k) for k in self._ENHANCEMENT_KEYS if k in args}
        engine = EnhancedAsyncLLM.from_engine_args(_to_engine_args(model_path, args), **enhancements)
        if engine.similarity_helper is not None or engine.nlp_analyzer is not None:
            await engine.start_enhancements()
        return engine

    async def _close(self, engine: Any) -> None:
        await engine.cleanup()

    def get_cache_stats(self) -> dict[str, Any]:
        """The exact cache's counters (hits per level, misses, stores ...)."""
        engine, _ = self._require()
        return engine.get_cache_stats()


def _to_engine_args(model_path: str, args: dict[str, Any]) -> Any:
    from ..config import EngineArgsConfig

    return EngineArgsConfig(model=model_path, **args).to_engine_args()


def _wait_gone(pids: list[int], timeout: float = 30.0) -> None:
    """Wait for the engine core processes to exit; kill any that outlive ``timeout``."""
    try:
        import psutil
    except ImportError:  # pragma: no cover - vLLM depends on psutil
        return
    procs = []
    for pid in pids:
        try:
            procs.append(psutil.Process(pid))
        except psutil.Error:
            continue
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    for proc in alive:
        logger.warning("engine core process %d did not exit; killing it", proc.pid)
        try:
            proc.kill()
        except psutil.Error:
            pass


def _empty_device_cache() -> None:
    try:
        import torch
    except ImportError:
        return
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
