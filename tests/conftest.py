"""Shared fixtures: one real vLLM engine per kind per session (engine start costs ~20 s on the CPU)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid

import pytest
import pytest_asyncio

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
TEST_MAX_MODEL_LEN = 512


def engine_args(**overrides):
    from enhanced_llm.config import EngineArgsConfig

    values = dict(kv_cache_memory_bytes=256 << 20, max_model_len=TEST_MAX_MODEL_LEN, max_num_seqs=64)
    values.update(overrides)
    return EngineArgsConfig(**values).to_engine_args()


def unique_prefix(name: str) -> str:
    return f"test-{name}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def redis_available() -> bool:
    try:
        with socket.create_connection((REDIS_HOST, REDIS_PORT), timeout=1):
            return True
    except OSError:
        return False


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def enhanced_llm(redis_available):
    """An EnhancedAsyncLLM with memory + Redis (MULTI) on the tiny model."""
    from enhanced_llm import CacheConfig, CacheType, EnhancedAsyncLLM

    assert redis_available, "tests need Redis at 127.0.0.1:6379"
    llm = EnhancedAsyncLLM.from_engine_args(
        engine_args(),
        # A Redis call may take longer than the default 0.25 s on a loaded CI machine; tests of the
        # timeout itself build their own engine.
        cache_config=CacheConfig(cache_type=CacheType.MULTI, key_prefix=unique_prefix("engine"), redis_timeout=2.0),
    )
    yield llm
    await llm.cleanup()


@pytest.fixture(scope="session")
def api_server(redis_available, tmp_path_factory):
    """``enhanced-llm serve`` with a MULTI cache, ``--api-key`` and ``--grpc-port``, shared by the
    serving and the CY-LLM gateway tests (one server start instead of two)."""
    from servers import serve

    assert redis_available, "tests need Redis at 127.0.0.1:6379"
    yield from serve(tmp_path_factory, name="api-server", grpc=True)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def plain_llm():
    """vLLM's own AsyncLLM on the same model, for side-by-side comparisons."""
    from vllm.v1.engine.async_llm import AsyncLLM

    llm = AsyncLLM.from_engine_args(engine_args())
    yield llm
    llm.shutdown()


class RedisServer:
    """A private redis-server on a free port, for outage tests."""

    def __init__(self) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            pytest.skip("redis-server binary not found")
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("private redis-server did not start")

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None


@pytest.fixture
def private_redis():
    server = RedisServer()
    server.start()
    yield server
    server.kill()
