"""Real ``enhanced-llm serve`` processes for the tests: launched on free ports, waited for until
healthy, killed with their engine core, and their Redis keys removed afterwards.

A server start costs ~30 s on two cores, most of the suite's time: tests that need the same
configuration share one server (``conftest.api_server``) instead of starting their own.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest

from conftest import REDIS_HOST, REDIS_PORT, unique_prefix

MODEL = "embedded:tiny"
API_KEY = "test-key-" + os.urandom(4).hex()
START_TIMEOUT_S = 480  # a loaded 2-core machine has taken over 240 s


@dataclass
class Server:
    """One ``enhanced-llm serve`` process (its engine core is in the same process group)."""

    proc: subprocess.Popen
    base_url: str
    key_prefix: str
    log: Path
    name: str = "server"
    api_key: str | None = API_KEY
    grpc_target: str | None = None

    def client(self, api_key: str | None = None, **kw) -> openai.OpenAI:
        """The official OpenAI client on this server (its own key unless another is given)."""
        key = api_key or self.api_key or "unused"
        kw.setdefault("timeout", 60)
        return openai.OpenAI(base_url=f"{self.base_url}/v1", api_key=key, max_retries=0, **kw)

    def http(self, **headers: str) -> httpx.Client:
        auth = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        return httpx.Client(base_url=self.base_url, headers={**auth, **headers}, timeout=60)

    def post(self, path: str, body: object, key: str | None = "", **kw) -> httpx.Response:
        """POST JSON with ``X-API-Key`` (the CY-LLM gateway's header): this server's key, ``key``, or none (None)."""
        return httpx.post(f"{self.base_url}{path}", json=body, headers={**self._key(key), **kw.pop("headers", {})},
                          timeout=60, **kw)

    def get(self, path: str, key: str | None = "") -> httpx.Response:
        return httpx.get(f"{self.base_url}{path}", headers=self._key(key), timeout=60)

    def _key(self, key: str | None) -> dict[str, str]:
        key = self.api_key if key == "" else key
        return {"X-API-Key": key} if key else {}

    def metric(self, name: str, **labels: str) -> float:
        """A sample's value from ``/metrics`` whose labels include ``labels`` (0 when absent)."""
        with self.http() as http:
            text = http.get("/metrics", timeout=10).text
        for line in text.splitlines():
            m = re.match(rf"^{re.escape(name)}(?:\{{(.*)\}})? (\S+)$", line)
            if m is None:
                continue
            found = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1) or ""))
            if all(found.get(k) == v for k, v in labels.items()):
                return float(m.group(2))
        return 0.0

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the API server and its engine core (the whole process group)."""
        if self.alive():
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def delete_keys(prefix: str) -> None:
    """Remove every Redis key under ``prefix`` (the shared Redis is never flushed)."""
    import redis

    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT)
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


def launch(
    log: Path, *extra_args: str, name: str = "server", api_key: str | None = API_KEY, grpc: bool = False,
    kv_bytes: int = 256 << 20, prefix: str | None = None, cls: type[Server] = Server,
) -> Server:
    """Start ``enhanced-llm serve`` on the tiny model with a MULTI cache on the shared Redis; do not wait."""
    port, prefix = free_port(), prefix or unique_prefix(name)
    grpc_port = free_port() if grpc else None
    cmd = [
        sys.executable, "-m", "enhanced_llm.cli", "serve", MODEL, "--host", "127.0.0.1", "--port", str(port),
        "--kv-cache-memory-bytes", str(kv_bytes), "--max-model-len", "512", "--enforce-eager",
        "--cache-type", "multi", "--redis-url", f"redis://{REDIS_HOST}:{REDIS_PORT}/0", "--cache-key-prefix", prefix,
        *(["--api-key", api_key] if api_key else []), *(["--grpc-port", str(grpc_port)] if grpc_port else []),
        *extra_args,
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    grpc_target = f"127.0.0.1:{grpc_port}" if grpc_port else None
    return cls(proc, f"http://127.0.0.1:{port}", prefix, log, name, api_key, grpc_target)


def wait_healthy(servers: list[Server], timeout: float = START_TIMEOUT_S) -> None:
    """Block until every server answers ``/health``; fail with the log of one that exited or is late."""
    pending, deadline = list(servers), time.time() + timeout
    while pending:
        for s in list(pending):
            if not s.alive():
                pytest.fail(f"{s.name} exited with {s.proc.returncode}:\n{s.log.read_text()[-4000:]}")
            try:
                if httpx.get(f"{s.base_url}/health", timeout=2).status_code == 200:
                    pending.remove(s)
            except httpx.HTTPError:
                pass
        if pending and time.time() > deadline:
            pytest.fail(f"{[s.name for s in pending]} not healthy after {timeout}s:\n{pending[0].log.read_text()[-4000:]}")
        if pending:
            time.sleep(0.5)


def serve(tmp_path_factory, *extra_args: str, name: str = "server", **kw) -> Iterator[Server]:
    """A fixture body: one healthy server for the fixture's scope, killed and its keys removed after."""
    server = launch(tmp_path_factory.mktemp(name) / "server.log", *extra_args, name=name, **kw)
    try:
        wait_healthy([server])
        yield server
    finally:
        server.kill()
        delete_keys(server.key_prefix)
