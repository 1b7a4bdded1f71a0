"""The gateway's read-only routes' bodies: models and health (seed 001), from the running engine."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timezone
from typing import Any

__all__ = ["ServerInfo", "ENGINE_NAME"]

#: What ``/api/v1/models`` reports as each model's ``engine`` (the CY-LLM engine type this server runs).
ENGINE_NAME = "enhanced-vllm-async"
CAPABILITIES = ["inference", "stream"]
HEALTH_TIMEOUT_S = 5.0


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _uptime(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}h{s % 3600 // 60}m{s % 60}s"


class ServerInfo:
    """Models and health of one server: its engine, its served names, its LoRA modules."""

    def __init__(self, engine: Any, served_names: list[str], serving_models: Any = None) -> None:
        self.engine = engine
        self.served_names = served_names
        self.serving_models = serving_models  # vLLM's OpenAIServingModels (LoRA modules), when there is one
        self.started = time.time()

    # -- models ---------------------------------------------------------------------------------

    def lora_requests(self) -> dict[str, Any]:
        return dict(getattr(self.serving_models, "lora_requests", None) or {})

    def status(self) -> str:
        if getattr(self.engine, "errored", False):
            return "error"
        return "ready" if getattr(self.engine, "is_running", True) else "loading"

    def model(self, name: str, detailed: bool = False) -> dict[str, Any]:
        config = self.engine.vllm_config
        model: dict[str, Any] = {
            "id": name, "name": name, "engine": ENGINE_NAME, "status": self.status(), "capabilities": list(CAPABILITIES),
        }
        if detailed:
            model["modelPath"] = config.model_config.model
            model["config"] = {
                "maxModelLen": config.model_config.max_model_len,
                "gpuMemoryUtilization": config.cache_config.gpu_memory_utilization,
                "tensorParallelSize": config.parallel_config.tensor_parallel_size,
            }
        else:
            model["maxModelLen"] = config.model_config.max_model_len
        if adapters := sorted(self.lora_requests()):
            model["loraAdapters"] = adapters
        return model

    def models(self) -> dict[str, Any]:
        return {"models": [self.model(name) for name in self.served_names]}

    # -- health ---------------------------------------------------------------------------------

    async def _engine_up(self) -> tuple[bool, str | None]:
        try:
            await asyncio.wait_for(self.engine.check_health(), HEALTH_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            return False, f"{type(exc).__name__}: {exc}"
        return True, None

    async def _redis(self) -> dict[str, Any]:
        """``UP`` / ``DOWN`` with the round trip of a PING; ``DISABLED`` when the cache has no Redis level."""
        store = getattr(getattr(self.engine, "cache_manager", None), "redis", None)
        if store is None:
            return {"status": "DISABLED", "details": {"connected": False}}
        started = time.perf_counter()
        ok = await store.ping()
        latency = round((time.perf_counter() - started) * 1000, 3)
        return {"status": "UP" if ok else "DOWN", "details": {"latencyMs": latency, "connected": ok}}

    async def health(self, detailed: bool) -> tuple[int, dict[str, Any]]:
        """(HTTP status, body). ``UP``; ``DEGRADED`` when Redis is down (the cache fails open);
        ``DOWN`` with 503 when the engine is."""
        (engine_up, engine_error), redis = await asyncio.gather(self._engine_up(), self._redis())
        overall = "UP" if engine_up else "DOWN"
        if engine_up and redis["status"] == "DOWN":
            overall = "DEGRADED"
        now = time.time()
        coordinator = "UP" if engine_up else "DOWN"
        if detailed:
            coordinator_details: dict[str, Any] = {
                "workers": {"total": 1, "healthy": int(engine_up), "unhealthy": int(not engine_up)},
                "queue": {
                    "pendingTasks": self.engine.get_num_unfinished_requests(),
                    "maxRunning": self.engine.vllm_config.scheduler_config.max_num_seqs,
                },
            }
            if engine_error:
                coordinator_details["error"] = engine_error
            components: dict[str, Any] = {
                "gateway": {"status": "UP", "details": {"startTime": _iso(self.started), "uptime": _uptime(now - self.started)}},
                "coordinator": {"status": coordinator, "details": coordinator_details},
                "redis": redis,
            }
        else:
            components = {"gateway": "UP", "coordinator": coordinator, "redis": redis["status"]}
        body = {"status": overall, "components": components, "timestamp": _iso(now)}
        return (200 if engine_up else 503), body
