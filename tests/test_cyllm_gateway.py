"""CY-LLM's gateway (seed 001) on ``enhanced-llm serve``: the ``/api/v1`` REST routes and gRPC ``StreamPredict``.

The session's shared server (``conftest.api_server``: tiny model, memory + Redis cache, ``--api-key``,
``--grpc-port``); REST through httpx, gRPC through the generated client.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from servers import API_KEY, MODEL, Server

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def server(api_server) -> Server:
    """The session's shared server (``conftest.api_server``): MULTI cache, ``--api-key``, ``--grpc-port``."""
    return api_server


def _body(label: str, tokens: int = 8, **extra) -> dict:
    return {
        "modelId": MODEL, "prompt": f"{label} {uuid.uuid4().hex[:8]} what is a cache",
        "generation": {"maxNewTokens": tokens, "temperature": 0.0}, **extra,
    }


def _sse(response: httpx.Response) -> list[dict | str]:
    """Parse an SSE body strictly: ``data: ...`` lines, each followed by one blank line."""
    text = response.text
    assert text.endswith("\n\n")
    events = []
    for block in text[:-2].split("\n\n"):
        assert block.startswith("data: ") and "\n" not in block, block
        payload = block[len("data: "):]
        events.append(payload if payload == "[DONE]" else json.loads(payload))
    return events


def _assert_error(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and isinstance(error["message"], str) and error["message"]
    assert isinstance(error["details"], list)
    return error


# -- authentication and errors ------------------------------------------------------------------------


@pytest.mark.parametrize("method,path", [
    ("POST", "/api/v1/inference"), ("POST", "/api/v1/inference/stream"), ("POST", "/api/v1/inference/streamWithMetadata"),
    ("GET", "/api/v1/models"), ("GET", f"/api/v1/models/{MODEL}"), ("GET", "/api/v1/health"), ("GET", "/api/v1/health/details"),
])
def test_no_key_or_wrong_key_is_401(server, method, path):
    for key in (None, "wrong-" + API_KEY):
        r = server.post(path, _body("auth"), key=key) if method == "POST" else server.get(path, key=key)
        _assert_error(r, 401, "UNAUTHORIZED")


def test_invalid_requests_are_400(server):
    body = _body("invalid")
    del body["prompt"]
    error = _assert_error(server.post("/api/v1/inference", body), 400, "INVALID_REQUEST")
    assert error["details"][0]["field"] == "prompt"
    for bad in ({**_body("x"), "generation": {"temperature": 3.0}}, {**_body("x"), "generation": {"maxNewTokens": "many"}}):
        _assert_error(server.post("/api/v1/inference/stream", bad), 400, "INVALID_REQUEST")
    r = httpx.post(f"{server.base_url}/api/v1/inference", content=b"{not json", headers={"X-API-Key": API_KEY})
    _assert_error(r, 400, "INVALID_REQUEST")
    # vLLM's own validation (a prompt longer than the model's context) is a 400 too, before any stream starts
    too_long = {**_body("long"), "prompt": "cache " * 2000}
    for path in ("/api/v1/inference", "/api/v1/inference/stream"):
        _assert_error(server.post(path, too_long), 400, "INVALID_REQUEST")


def test_unknown_model_is_404(server):
    for path in ("/api/v1/inference", "/api/v1/inference/stream"):
        error = _assert_error(server.post(path, {**_body("model"), "modelId": "model-not-found"}), 404, "MODEL_NOT_FOUND")
        assert error["details"] == [{
            "type": "model_not_found", "field": "modelId", "description": "Model 'model-not-found' is not configured",
        }]
    _assert_error(server.get("/api/v1/models/model-not-found"), 404, "MODEL_NOT_FOUND")


def test_training_routes_are_404(server):
    for method, path in (("POST", "/api/v1/training/start"), ("GET", "/api/v1/training/status/job-1"),
                         ("POST", "/api/v1/training/cancel/job-1"), ("GET", "/api/v1/training/list")):
        r = server.post(path, {"baseModel": "m"}) if method == "POST" else server.get(path)
        error = _assert_error(r, 404, "NOT_FOUND")
        assert "training" in error["message"]
    _assert_error(server.get("/api/v1/nothing-here"), 404, "NOT_FOUND")


# -- inference ------------------------------------------------------------------------------------------


def test_inference_json_and_cache_headers(server):
    body = _body("inference")
    first = server.post("/api/v1/inference", body)
    assert first.status_code == 200, first.text
    data = first.json()
    assert set(data) == {"id", "modelId", "object", "created", "choices", "usage"}
    assert data["id"].startswith("gen-") and data["modelId"] == MODEL and data["object"] == "text_completion"
    assert isinstance(data["created"], int) and abs(data["created"] - time.time()) < 120
    [choice] = data["choices"]
    assert choice["index"] == 0 and isinstance(choice["text"], str) and choice["finish_reason"] in ("stop", "length")
    usage = data["usage"]
    assert usage["prompt_tokens"] > 0 and 0 < usage["completion_tokens"] <= 8
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert first.headers["x-cache"] == "MISS"
    again = server.post("/api/v1/inference", body)
    assert again.headers["x-cache"] == "HIT" and again.headers["x-cache-source"] == "exact"
    assert again.json()["choices"] == data["choices"] and again.json()["usage"] == usage


def test_stream_sse_framing_and_cached_stream(server):
    body = _body("stream", tokens=12)
    first = server.post("/api/v1/inference/stream", body)
    assert first.status_code == 200 and first.headers["content-type"].startswith("text/event-stream")
    assert first.headers["x-cache"] == "MISS"
    events = _sse(first)
    assert events[-1] == "[DONE]" and "[DONE]" not in events[:-1]
    chunks = events[:-1]
    assert chunks and len({c["id"] for c in chunks}) == 1 and chunks[0]["id"].startswith("gen-")
    offset = 0
    for chunk in chunks:
        assert chunk["object"] == "text_completion.chunk"
        [choice] = chunk["choices"]
        assert choice["index"] == 0 and choice["offset"] == offset
        offset += len(choice["text"])
    assert all("finish_reason" not in c["choices"][0] and c["choices"][0]["text"] for c in chunks[:-1])
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    text = "".join(c["choices"][0]["text"] for c in chunks)
    # at most one chunk per token; the same answer, non-streamed, comes from the cache
    whole = server.post("/api/v1/inference", body)
    assert whole.headers["x-cache"] == "HIT" and whole.json()["choices"][0]["text"] == text
    assert len(chunks) <= whole.json()["usage"]["completion_tokens"]
    cached = server.post("/api/v1/inference/stream", body)
    assert cached.headers["x-cache"] == "HIT"
    assert [c["choices"][0] for c in _sse(cached)[:-1]] == [c["choices"][0] for c in chunks]


def test_stream_with_metadata_tenants_do_not_share(server):
    base = _body("tenant")

    def call(tenant: str, trace: str) -> httpx.Response:
        body = {**base, "metadata": {"traceId": trace, "tenant": tenant, "playerId": "p-1", "locale": "zh-CN"}}
        r = server.post("/api/v1/inference/streamWithMetadata", body)
        assert r.status_code == 200, r.text
        return r

    a1 = call("tenant-a", "trace-1")
    assert a1.headers["x-cache"] == "MISS"
    assert all(e["traceId"] == "trace-1" for e in _sse(a1)[:-1])
    assert call("tenant-a", "trace-2").headers["x-cache"] == "HIT"
    assert call("tenant-b", "trace-3").headers["x-cache"] == "MISS"  # another tenant: not shared
    assert call("tenant-b", "trace-4").headers["x-cache"] == "HIT"
    # without metadata the request is in neither tenant's scope
    assert server.post("/api/v1/inference/stream", base).headers["x-cache"] == "MISS"


# -- models and health --------------------------------------------------------------------------------------


def test_models(server):
    r = server.get("/api/v1/models")
    assert r.status_code == 200
    [model] = r.json()["models"]
    assert model == {
        "id": MODEL, "name": MODEL, "engine": "enhanced-vllm-async", "status": "ready",
        "capabilities": ["inference", "stream"], "maxModelLen": 512,
    }
    detail = server.get(f"/api/v1/models/{MODEL}").json()
    assert detail["id"] == MODEL and detail["status"] == "ready" and Path(detail["modelPath"]).exists()
    assert detail["config"]["maxModelLen"] == 512 and detail["config"]["tensorParallelSize"] == 1


def test_health(server):
    r = server.get("/api/v1/health")
    assert r.status_code == 200
    data = r.json()
    assert data["status"] == "UP" and data["components"] == {"gateway": "UP", "coordinator": "UP", "redis": "UP"}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", data["timestamp"])
    details = server.get("/api/v1/health/details").json()
    assert details["status"] == "UP"
    comps = details["components"]
    assert comps["gateway"]["status"] == "UP" and re.fullmatch(r"\d+h\d+m\d+s", comps["gateway"]["details"]["uptime"])
    assert comps["coordinator"]["details"]["workers"] == {"total": 1, "healthy": 1, "unhealthy": 0}
    assert comps["coordinator"]["details"]["queue"]["pendingTasks"] >= 0
    redis = comps["redis"]
    assert redis["status"] == "UP" and redis["details"]["connected"] is True
    assert 0 < redis["details"]["latencyMs"] < 250  # the cache's Redis timeout is 250 ms


def test_openai_routes_still_served(server):
    r = httpx.get(f"{server.base_url}/v1/models", headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30)
    assert r.status_code == 200 and [m["id"] for m in r.json()["data"]] == [MODEL]


# -- gRPC -------------------------------------------------------------------------------------------------------


def test_grpc_stream_predict(server):
    import grpc

    from enhanced_llm.cyllm.proto import ai_service_pb2 as pb2
    from enhanced_llm.cyllm.proto import ai_service_pb2_grpc as pb2_grpc

    body = _body("grpc", tokens=10)
    request = pb2.StreamPredictRequest(
        model_id=MODEL, prompt=body["prompt"], priority=1, worker_hint="any",
        generation=pb2.GenerationParameters(max_new_tokens=10, temperature=0.0),
        metadata=pb2.StreamMetadata(trace_id="trace-grpc", tenant="", player_id="p", locale="en"),
    )
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = pb2_grpc.AIServiceStub(channel)
        started = time.monotonic()
        stream = stub.StreamPredict(request, metadata=[("x-api-key", API_KEY)], timeout=60)
        first = next(stream)
        first_at = time.monotonic() - started
        responses = [first, *stream]
        with pytest.raises(grpc.RpcError) as err:
            list(stub.StreamPredict(request, metadata=[("x-api-key", "wrong")], timeout=30))
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as err:
            list(stub.StreamPredict(pb2.StreamPredictRequest(model_id="nope", prompt="x"), metadata=[("x-api-key", API_KEY)]))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.RpcError) as err:
            list(stub.StreamPredict(pb2.StreamPredictRequest(model_id=MODEL), metadata=[("x-api-key", API_KEY)]))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert first_at < 60
    assert [r.index for r in responses] == list(range(len(responses)))
    assert all(r.trace_id == "trace-grpc" for r in responses)
    assert [r.end_of_stream for r in responses] == [False] * (len(responses) - 1) + [True]
    assert 1 <= len(responses) <= 3  # 4-token chunks of at most 10 tokens
    # the same request over REST: the same answer, from the cache gRPC filled
    rest = server.post("/api/v1/inference", body)
    assert rest.headers["x-cache"] == "HIT"
    assert rest.json()["choices"][0]["text"] == "".join(r.chunk for r in responses)


def test_generated_grpc_code_is_current(tmp_path):
    """The checked-in modules are what the regeneration command in cyllm/proto/__init__.py writes."""
    proto = Path("enhanced_llm/cyllm/proto/ai_service.proto")
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", "-I", str(ROOT / "src"), f"--python_out={tmp_path}",
         f"--pyi_out={tmp_path}", f"--grpc_python_out={tmp_path}", str(ROOT / "src" / proto)],
        check=True, capture_output=True,
    )
    for name in ("ai_service_pb2.py", "ai_service_pb2.pyi", "ai_service_pb2_grpc.py"):
        fresh = (tmp_path / proto.parent / name).read_text()
        assert (ROOT / "src" / proto.parent / name).read_text() == fresh, name


def test_gateway_example_script(server):
    """examples/cyllm_gateway.sh runs against the server: every curl call answers as its comment says."""
    env = {**os.environ, "BASE": server.base_url, "KEY": API_KEY, "MODEL": MODEL}
    proc = subprocess.run(["bash", str(ROOT / "examples" / "cyllm_gateway.sh")], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert '"status":"UP"' in out and '"models":[' in out and "data: [DONE]" in out and '"traceId":"trace-001"' in out
    assert re.search(r"x-cache: MISS.*x-cache: HIT", out, re.S | re.I)
    assert [int(code) for code in re.findall(r" \[(\d{3})\]$", out, re.M)] == [401, 400, 404, 404]
