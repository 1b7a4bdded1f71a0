"""``enhanced-llm serve`` end to end: a real server subprocess (tiny model, real Redis), the official ``openai`` client.

The session's shared server (``conftest.api_server``, also used by the CY-LLM gateway tests), with
``--api-key`` so that every request also goes through vLLM's authentication, and a semantic server
for the module, which the last test stops with SIGTERM.
"""

from __future__ import annotations

import signal
import threading
import time
import uuid
from collections.abc import Iterator

import httpx
import openai
import psutil
import pytest

from conftest import REDIS_HOST, REDIS_PORT
from servers import MODEL, Server, serve


@pytest.fixture(scope="module")
def server(api_server) -> Server:
    """The session's shared server (``conftest.api_server``): MULTI cache, ``--api-key``."""
    return api_server


def _hits(server: Server) -> float:
    return sum(server.metric("enhanced_llm_cache_hits_total", source="exact", level=lv) for lv in ("memory", "redis"))


def _prompt(label: str) -> str:
    return f"{label} {uuid.uuid4().hex[:8]} what is a cache"


def _chat(server: Server, content: str, headers: dict[str, str] | None = None, extra_body: dict | None = None):
    raw = server.client().chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": content}], max_tokens=8, temperature=0,
        extra_headers=headers, extra_body=extra_body,
    )
    return raw.headers.get("x-cache"), raw.parse()


# -- basics --------------------------------------------------------------------------------------


def test_models_and_api_key(server):
    assert [m.id for m in server.client().models.list()] == [MODEL]
    with pytest.raises(openai.AuthenticationError):
        server.client(api_key="wrong").models.list()
    assert httpx.get(f"{server.base_url}/v1/models", timeout=10).status_code == 401
    r = httpx.post(f"{server.base_url}/v1/completions", json={"model": MODEL, "prompt": "x"}, headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401


def test_chat_non_streaming_second_request_from_cache(server):
    content, hits = _prompt("chat"), _hits(server)
    first_header, first = _chat(server, content)
    second_header, second = _chat(server, content)
    assert (first_header, second_header) == ("MISS", "HIT")
    assert second.choices[0].message.content == first.choices[0].message.content
    assert second.choices[0].finish_reason == first.choices[0].finish_reason
    assert second.usage.completion_tokens == first.usage.completion_tokens
    assert _hits(server) == hits + 1


def test_chat_streaming_second_request_from_cache(server):
    content, hits = _prompt("chat-stream"), _hits(server)
    results = []
    for _ in range(2):
        raw = server.client().chat.completions.with_raw_response.create(
            model=MODEL, messages=[{"role": "user", "content": content}], max_tokens=8, temperature=0, stream=True,
        )
        text = "".join(chunk.choices[0].delta.content or "" for chunk in raw.parse() if chunk.choices)
        results.append((raw.headers.get("x-cache"), text))
    assert [h for h, _ in results] == ["MISS", "HIT"]
    assert results[0][1] == results[1][1]
    assert _hits(server) == hits + 1


@pytest.mark.parametrize("stream", [False, True])
def test_completions_second_request_from_cache(server, stream):
    prompt, hits = _prompt(f"completion-{stream}"), _hits(server)
    results = []
    for _ in range(2):
        raw = server.client().completions.with_raw_response.create(
            model=MODEL, prompt=prompt, max_tokens=8, temperature=0, stream=stream
        )
        parsed = raw.parse()
        if stream:
            text = "".join(c.choices[0].text for c in parsed if c.choices)
        else:
            text = parsed.choices[0].text
        results.append((raw.headers.get("x-cache"), text))
    assert [h for h, _ in results] == ["MISS", "HIT"]
    assert results[0][1] == results[1][1]
    assert _hits(server) == hits + 1


def test_answers_reach_redis_under_the_prefix(server):
    import redis

    _chat(server, _prompt("redis"))
    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT)
    deadline = time.time() + 5
    while not list(client.scan_iter(match=f"{server.key_prefix}:entry:*", count=1000)) and time.time() < deadline:
        time.sleep(0.1)
    assert list(client.scan_iter(match=f"{server.key_prefix}:entry:*", count=1000))
    client.close()


# -- scopes and cache modes ----------------------------------------------------------------------


def test_scope_header_and_vllm_xargs_narrow_the_tenant(server):
    """--api-key without a tenant file: every key holder is tenant "default"; the header and the
    body only narrow within it (tenants bound to keys: tests/test_tenants.py)."""
    content = _prompt("scoped")
    assert _chat(server, content, {"X-Cache-Scope": "tenant-a"})[0] == "MISS"
    assert _chat(server, content, {"X-Cache-Scope": "tenant-a"})[0] == "HIT"
    assert _chat(server, content, {"X-Cache-Scope": "tenant-b"})[0] == "MISS"
    assert _chat(server, content)[0] == "MISS"  # no scope: the tenant's root scope
    # The body's flat vllm_xargs form; alone it names the same sub-scope as the header.
    assert _chat(server, content, extra_body={"vllm_xargs": {"enhanced_llm.scope": "tenant-a"}})[0] == "HIT"
    assert _chat(server, content, extra_body={"vllm_xargs": {"cache_scope": "tenant-c"}})[0] == "MISS"
    assert _chat(server, content, extra_body={"vllm_xargs": {"cache_scope": "tenant-c"}})[0] == "HIT"
    # With both, the body narrows within the header's sub-scope, never leaves it.
    both = {"vllm_xargs": {"enhanced_llm.scope": "tenant-a"}}
    assert _chat(server, content, {"X-Cache-Scope": "tenant-b"}, both)[0] == "MISS"
    assert _chat(server, content, {"X-Cache-Scope": "tenant-b"}, both)[0] == "HIT"


def test_open_and_guarded_routes_with_api_key(server):
    """vLLM's --api-key check covers /v1 only; ours covers every route but /health, /ping and (without
    --protect-metrics) /metrics: POST /invocations generated for anyone before."""
    body = {"model": MODEL, "prompt": _prompt("invocations"), "max_tokens": 2, "temperature": 0}
    assert httpx.post(f"{server.base_url}/invocations", json=body, timeout=30).status_code == 401
    assert httpx.post(f"{server.base_url}/tokenize", json=body, timeout=30).status_code == 401
    with server.http() as http:
        assert http.post("/invocations", json=body).status_code == 200
    assert httpx.get(f"{server.base_url}/metrics", timeout=30).status_code == 200
    assert httpx.get(f"{server.base_url}/health", timeout=30).status_code == 200


def test_cache_modes_from_vllm_xargs(server):
    content = _prompt("modes")
    bypass = {"vllm_xargs": {"enhanced_llm.cache": "bypass"}}
    assert _chat(server, content, extra_body=bypass)[0] == "MISS"
    assert _chat(server, content, extra_body=bypass)[0] == "MISS"  # bypass never stores
    assert _chat(server, content)[0] == "MISS"
    assert _chat(server, content)[0] == "HIT"
    assert _chat(server, content, extra_body={"vllm_xargs": {"cache_mode": "refresh"}})[0] == "MISS"


# -- semantic cache through the chat endpoint ----------------------------------------------------


@pytest.fixture(scope="module")
def semantic_server(redis_available, tmp_path_factory) -> Iterator[Server]:
    assert redis_available, "tests need Redis at 127.0.0.1:6379"
    yield from serve(tmp_path_factory, "--enable-semantic-cache", "--similarity-threshold", "0.8", name="semantic-server")


def test_chat_paraphrase_hits_only_within_the_same_conversation(semantic_server):
    """vLLM renders the chat template; the cache compares the last user messages and keeps
    conversations (here: system prompts) apart."""
    system = {"role": "system", "content": "You are a helpful assistant. Answer concisely and accurately."}
    no_store = {"vllm_xargs": {"enhanced_llm.cache": "no-store"}}  # a retry must not become an exact hit

    def ask(messages, extra_body=None):
        raw = semantic_server.client().chat.completions.with_raw_response.create(
            model=MODEL, messages=messages, max_tokens=64, temperature=0, extra_body=extra_body,
        )
        return raw.headers, raw.parse().choices[0].message.content

    def user(text):
        return {"role": "user", "content": text}

    headers, original = ask([system, user("How do I convert Celsius to Fahrenheit?")])
    assert headers["x-cache"] == "MISS"
    for _ in range(20):  # the question joins the index right after its answer is stored
        headers, answer = ask([system, user("How can I convert Celsius into Fahrenheit?")], no_store)
        if headers.get("x-cache-source") == "semantic":
            break
        time.sleep(0.25)
    assert (headers["x-cache"], headers.get("x-cache-source")) == ("HIT", "semantic")
    assert answer == original
    other_system = {"role": "system", "content": "Answer in French."}
    assert ask([other_system, user("How can I convert Celsius into Fahrenheit?")], no_store)[0]["x-cache"] == "MISS"
    assert ask([system, user("Who wrote the play Hamlet?")], no_store)[0]["x-cache"] == "MISS"


# -- errors and metrics ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body, param",
    [
        (b'{"model": "embedded:tiny", "prompt": ', None),  # not JSON
        ({"model": MODEL, "prompt": "x", "max_tokens": "many"}, "max_tokens"),
        ({"model": MODEL, "prompt": "x", "vllm_xargs": {"enhanced_llm": {"scope": "a"}}}, "vllm_xargs"),  # nested: vLLM rejects
        ({"model": MODEL, "prompt": "x", "vllm_xargs": {"enhanced_llm.cache": "sometimes"}}, "cache"),
        ({"model": MODEL, "prompt": "x", "vllm_xargs": {"cache_scope": 7}}, "scope"),
    ],
)
def test_malformed_bodies_get_structured_400(server, body, param):
    with server.http() as http:
        if isinstance(body, bytes):
            r = http.post("/v1/completions", content=body, headers={"Content-Type": "application/json"})
        else:
            r = http.post("/v1/completions", json=body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == 400 and error["message"]
    if param is not None:
        assert param in (error.get("param") or "")


def test_metrics_next_to_vllms(server):
    with server.http() as http:
        text = http.get("/metrics").text
    assert "vllm:" in text  # vLLM's own families are still there
    for family in ("enhanced_llm_cache_hits_total", "enhanced_llm_cache_misses_total", "enhanced_llm_cache_stores_total",
                   "enhanced_llm_cache_tokens_saved_total", "enhanced_llm_cache_time_saved_seconds_total",
                   "enhanced_llm_cache_redis_errors_total", "enhanced_llm_cache_memory_entries"):
        assert family in text
    assert server.metric("enhanced_llm_cache_stores_total") >= 1
    assert server.metric("enhanced_llm_cache_tokens_saved_total") > 0


# -- shutdown (keep last: it stops the module's semantic server; the shared one lives on) -------------


def test_sigterm_stops_cleanly_with_a_request_in_flight(semantic_server):
    server = semantic_server
    parent = psutil.Process(server.proc.pid)
    family = [parent, *parent.children(recursive=True)]
    assert len(family) >= 2  # the API server and its engine core process
    outcome: dict[str, object] = {}

    def long_request() -> None:
        try:
            with server.http() as http:
                r = http.post("/v1/completions", json={
                    "model": MODEL, "prompt": _prompt("in-flight"), "max_tokens": 400, "temperature": 0, "ignore_eos": True,
                })
            outcome["status"] = r.status_code
        except httpx.HTTPError as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=long_request)
    thread.start()
    time.sleep(0.5)
    started = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    server.proc.wait(timeout=30)
    elapsed = time.monotonic() - started
    thread.join(timeout=10)
    assert not thread.is_alive(), "the in-flight request hung"
    assert outcome.get("status") in (200, 500) or isinstance(outcome.get("error"), httpx.RemoteProtocolError), outcome
    assert elapsed < 15, f"shutdown took {elapsed:.1f}s"
    gone, alive = psutil.wait_procs(family, timeout=10)
    assert not alive, f"processes left behind: {alive}"
    log = server.log.read_text()
    assert "enhanced-llm server stopped" in log
