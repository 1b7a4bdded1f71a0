"""Real memory figures of a loaded engine: processes, KV cache, response cache, GPU."""

from __future__ import annotations

import logging
from typing import Any

__all__ = ["memory_usage", "engine_core_pids"]

logger = logging.getLogger(__name__)


def engine_core_pids(engine: Any) -> list[int]:
    """Process ids of the engine's core processes (vLLM's ``CoreEngineProcManager``), or none."""
    manager = getattr(getattr(getattr(engine, "engine_core", None), "resources", None), "engine_manager", None)
    return [p.pid for p in getattr(manager, "processes", None) or () if getattr(p, "pid", None)]


def memory_usage(engine: Any) -> dict[str, float]:
    """Figures in bytes (counts where the name says so); keys present only when measurable.

    * ``process_rss_bytes``: this (front-end) process;
    * ``engine_rss_bytes`` / ``engine_processes``: the engine core process(es) and their workers;
    * ``kv_cache_bytes``: KV cache allocated by the engine (blocks x block size x bytes per token
      of the attention layers), ``kv_cache_blocks``, ``kv_cache_tokens``;
    * ``cache_memory_bytes`` / ``cache_memory_entries``: the response cache's memory level;
    * ``gpu_used_bytes`` / ``gpu_total_bytes``: the device(s) the engine uses, where there is a GPU.
    """
    out: dict[str, float] = {}
    out.update(_process_figures(engine))
    if engine is not None:
        out.update(_kv_figures(engine))
        out.update(_cache_figures(engine))
    out.update(_gpu_figures())
    return out


def _process_figures(engine: Any) -> dict[str, float]:
    try:
        import psutil
    except ImportError:  # pragma: no cover - vLLM depends on psutil
        logger.warning("psutil is not installed (pip install psutil): no process figures")
        return {}
    out = {"process_rss_bytes": float(psutil.Process().memory_info().rss)}
    if engine is None:
        return out
    procs = []
    for pid in engine_core_pids(engine):
        try:
            proc = psutil.Process(pid)
            procs.append(proc)
            procs.extend(proc.children(recursive=True))
        except psutil.Error:
            continue
    rss = 0
    for proc in procs:
        try:
            rss += proc.memory_info().rss
        except psutil.Error:
            continue
    out["engine_processes"] = float(len(procs))
    out["engine_rss_bytes"] = float(rss)
    return out


def _kv_figures(engine: Any) -> dict[str, float]:
    config = getattr(engine, "vllm_config", None)
    if config is None:
        return {}
    cache, model, parallel = config.cache_config, config.model_config, config.parallel_config
    blocks = int(cache.num_gpu_blocks or 0)
    out = {"kv_cache_blocks": float(blocks), "kv_cache_tokens": float(blocks * cache.block_size)}
    try:
        per_token = _kv_bytes_per_token(cache, model, parallel)
    except Exception:  # noqa: BLE001 - unusual attention layouts: blocks are still reported
        logger.debug("cannot size the KV cache of this model", exc_info=True)
    else:
        out["kv_cache_bytes"] = float(blocks * cache.block_size * per_token)
    return out


def _kv_bytes_per_token(cache: Any, model: Any, parallel: Any) -> int:
    """K and V of every attention layer for one token, on one tensor-parallel rank times the ranks."""
    import torch

    if cache.cache_dtype in (None, "auto"):
        itemsize = model.dtype.itemsize
    elif str(cache.cache_dtype).startswith("fp8"):
        itemsize = 1
    else:
        itemsize = getattr(torch, str(cache.cache_dtype)).itemsize
    layers = model.get_num_layers(parallel)
    per_rank = 2 * layers * model.get_num_kv_heads(parallel) * model.get_head_size() * itemsize
    return per_rank * parallel.tensor_parallel_size * parallel.pipeline_parallel_size


def _cache_figures(engine: Any) -> dict[str, float]:
    manager = getattr(engine, "cache_manager", None)
    memory = getattr(manager, "memory", None)
    if memory is None:
        return {}
    return {"cache_memory_bytes": float(memory.nbytes), "cache_memory_entries": float(len(memory))}


def _gpu_figures() -> dict[str, float]:
    """Device memory in use, from NVML (no CUDA context in this process); none without a GPU."""
    try:
        import pynvml
    except ImportError:
        return _gpu_figures_torch()
    try:
        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001 - no driver: no GPU
        return {}
    try:
        used = total = 0
        for i in range(pynvml.nvmlDeviceGetCount()):
            info = pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(i))
            used, total = used + info.used, total + info.total
        return {"gpu_used_bytes": float(used), "gpu_total_bytes": float(total)} if total else {}
    finally:
        pynvml.nvmlShutdown()


def _gpu_figures_torch() -> dict[str, float]:
    try:
        import torch
    except ImportError:
        return {}
    if not torch.cuda.is_available():
        return {}
    free, total = torch.cuda.mem_get_info()
    return {"gpu_used_bytes": float(total - free), "gpu_total_bytes": float(total)}
