"""Tenants bound to API keys, through a real ``enhanced-llm serve`` (tiny model, real Redis, semantic
cache on) and the official ``openai`` client; plus the tenant model's pure parts.

One server for the module: ``--api-key`` (tenant ``default``), ``--tenant-keys`` with keys of
tenants ``alpha`` (two keys, one not allowed to forget), ``beta`` (not allowed to refresh) and
``alpha/x`` (a name that a naive ``tenant/sub`` join would collide with), and ``--protect-metrics``.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Iterator

import httpx
import openai
import pytest

from servers import API_KEY, MODEL, Server, serve

ALPHA, ALPHA_NO_FORGET, BETA, SLASHED = (f"{name}-{uuid.uuid4().hex[:8]}" for name in ("alpha", "alpha2", "beta", "slashed"))
TENANT_FILE = {
    ALPHA: "alpha",
    ALPHA_NO_FORGET: {"tenant": "alpha", "allow_forget": False},
    BETA: {"tenant": "beta", "allow_refresh": False},
    SLASHED: "alpha/x",
}


@pytest.fixture(scope="module")
def server(redis_available, tmp_path_factory) -> Iterator[Server]:
    assert redis_available, "tests need Redis at 127.0.0.1:6379"
    keys = tmp_path_factory.mktemp("tenants") / "keys.json"
    keys.write_text(json.dumps(TENANT_FILE))
    yield from serve(
        tmp_path_factory, "--tenant-keys", str(keys), "--protect-metrics",
        "--enable-semantic-cache", "--similarity-threshold", "0.8",
        name="tenants-server", grpc=True,
    )


def _chat(server: Server, key: str, content: str, headers=None, extra_body=None, max_tokens: int = 8, **kw):
    raw = server.client(api_key=key).chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": content}], max_tokens=max_tokens, temperature=0,
        extra_headers=headers, extra_body=extra_body, **kw,
    )
    return raw.headers, raw.parse().choices[0].message.content


def _cache(server: Server, key: str, content: str, **kw) -> str | None:
    return _chat(server, key, content, **kw)[0].get("x-cache")


def _prompt(label: str) -> str:
    return f"{label} {uuid.uuid4().hex[:8]} what is a cache"


def _http(server: Server, key: str | None = None, **headers: str) -> httpx.Client:
    auth = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=server.base_url, headers={**auth, **headers}, timeout=60)


# -- isolation ------------------------------------------------------------------------------------


def test_each_key_reads_only_its_tenants_exact_answers(server):
    content = _prompt("exact")
    assert _cache(server, ALPHA, content) == "MISS"
    assert _cache(server, ALPHA, content) == "HIT"
    assert _cache(server, ALPHA_NO_FORGET, content) == "HIT"  # another key of the same tenant
    assert _cache(server, BETA, content) == "MISS"
    assert _cache(server, BETA, content) == "HIT"
    assert _cache(server, API_KEY, content) == "MISS"  # --api-key holders: tenant "default"
    assert _cache(server, SLASHED, content) == "MISS"


def test_scope_header_and_body_only_narrow_within_the_tenant(server):
    content = _prompt("tricks")
    assert _cache(server, ALPHA, content) == "MISS"  # alpha's root scope
    assert _cache(server, ALPHA, content, headers={"X-Cache-Scope": "x"}) == "MISS"  # alpha narrowed by "x"
    tricks = [
        {"headers": {"X-Cache-Scope": "alpha"}},
        {"extra_body": {"vllm_xargs": {"cache_scope": "alpha"}}},
        {"extra_body": {"vllm_xargs": {"enhanced_llm.scope": "alpha"}}},
        {"headers": {"X-Cache-Scope": "alpha"}, "extra_body": {"vllm_xargs": {"cache_scope": "x"}}},
        {"extra_body": {"vllm_xargs": {"cache_scope": '["alpha"]'}}},
        {"headers": {"X-Cache-Scope": '"]'}},
    ]
    for trick in tricks:  # beta may not reach alpha's entries, whatever it sends (no-store: nor its own)
        xargs = {**trick.get("extra_body", {}).get("vllm_xargs", {}), "cache_mode": "no-store"}
        assert _cache(server, BETA, content, headers=trick.get("headers"), extra_body={"vllm_xargs": xargs}) == "MISS", trick
    # Tenant "alpha/x" is not tenant "alpha" narrowed by "x" (a "tenant/sub" join would be).
    assert _cache(server, SLASHED, content) == "MISS"
    # alpha's own narrowed repeats still hit; body and header name the same sub-scope.
    assert _cache(server, ALPHA, content, headers={"X-Cache-Scope": "x"}) == "HIT"
    assert _cache(server, ALPHA, content, extra_body={"vllm_xargs": {"cache_scope": "x"}}) == "HIT"


def test_semantic_paraphrase_answers_only_its_own_tenant(server):
    no_store = {"vllm_xargs": {"enhanced_llm.cache": "no-store"}}  # probes must not store answers of their own
    tag = uuid.uuid4().hex[:6]
    original = f"How do I convert Celsius to Fahrenheit in recipe {tag}?"
    paraphrase = f"How can I convert Celsius into Fahrenheit in recipe {tag}?"
    headers, answer = _chat(server, ALPHA, original, max_tokens=32)
    assert headers["x-cache"] == "MISS"
    for _ in range(20):  # the question joins the index right after its answer is stored
        headers, repeat = _chat(server, ALPHA, paraphrase, extra_body=no_store, max_tokens=32)
        if headers.get("x-cache-source") == "semantic":
            break
        time.sleep(0.25)
    assert (headers["x-cache"], headers.get("x-cache-source")) == ("HIT", "semantic")
    assert repeat == answer
    for key in (BETA, SLASHED, API_KEY):
        headers, _ = _chat(server, key, paraphrase, extra_body=no_store, max_tokens=32)
        assert headers["x-cache"] == "MISS", key
        headers, _ = _chat(server, key, original, extra_body=no_store, max_tokens=32)
        assert headers["x-cache"] == "MISS", key


def test_identical_requests_in_flight_are_coalesced_only_within_a_tenant(server):
    content = _prompt("inflight")
    statuses: dict[str, list[str]] = {ALPHA: [], BETA: []}

    def ask(key: str) -> None:
        headers, _ = _chat(server, key, content, max_tokens=200, extra_body={"ignore_eos": True})
        statuses[key].append(headers.get("x-cache-status"))

    threads = [threading.Thread(target=ask, args=(k,)) for k in (ALPHA, ALPHA, BETA)]
    for t in threads:
        t.start()
        time.sleep(0.05)
    for t in threads:
        t.join(timeout=120)
    assert sorted(statuses[ALPHA]) in (["coalesced", "miss"], ["hit", "miss"]), statuses
    assert statuses[BETA] == ["miss"], statuses


# -- bad scope headers, modes, keys ----------------------------------------------------------------


@pytest.mark.parametrize("values", [["a", "b"], ["a", "a"], [""], ["x" * 97], ["a\tb"]])
def test_bad_scope_headers_get_a_structured_400(server, values):
    headers = [("Authorization", f"Bearer {ALPHA}"), *(("X-Cache-Scope", v) for v in values)]
    r = httpx.post(f"{server.base_url}/v1/completions", headers=headers, timeout=30,
                   json={"model": MODEL, "prompt": "x", "max_tokens": 2})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == 400 and error["message"] and error["param"] == "X-Cache-Scope"
    assert _cache(server, ALPHA, _prompt("after-bad-header")) == "MISS"  # the server is fine


def test_refresh_is_refused_for_a_key_without_it(server):
    content = _prompt("refresh")
    refresh = {"vllm_xargs": {"cache_mode": "refresh"}}
    with pytest.raises(openai.BadRequestError) as err:
        _chat(server, BETA, content, extra_body=refresh)
    assert err.value.status_code == 400 and "refresh" in str(err.value)
    assert _cache(server, BETA, content) == "MISS"  # nothing was stored by the refused request
    assert _cache(server, ALPHA, content, extra_body=refresh) == "MISS"
    assert _cache(server, ALPHA, content) == "HIT"  # alpha's refresh stored


def test_every_generating_route_needs_a_key(server):
    body = {"model": MODEL, "prompt": "hello", "max_tokens": 2}
    with _http(server) as anonymous:
        for method, path in [("POST", "/invocations"), ("POST", "/v1/completions"), ("POST", "/tokenize"),
                             ("POST", "/generative_scoring"), ("DELETE", "/v1/cache"), ("POST", "/api/v1/generate"),
                             ("GET", "/metrics"), ("GET", "/load")]:
            r = anonymous.request(method, path, json=body)
            assert r.status_code == 401, (method, path, r.status_code)
            if path.startswith("/api/"):  # the CY-LLM gateway's own error body (seed 001)
                assert r.json()["error"]["code"] == "UNAUTHORIZED"
            else:  # vLLM's
                assert r.json() == {"error": "Unauthorized"}
        assert anonymous.get("/health").status_code == 200
    with _http(server, "wrong-key") as wrong:
        assert wrong.post("/invocations", json=body).status_code == 401
    with _http(server, ALPHA) as alpha:
        r = alpha.post("/invocations", json=body)
        assert r.status_code == 200 and r.json()["choices"], r.text
        assert "enhanced_llm_cache_hits_total" in alpha.get("/metrics").text  # --protect-metrics: with a key
    # X-API-Key counts on the gateway's /api/ routes (404: no such route here, but past the key check) only.
    assert httpx.post(f"{server.base_url}/api/v1/none", headers={"X-API-Key": ALPHA}, json={}).status_code == 404
    assert httpx.get(f"{server.base_url}/v1/models", headers={"X-API-Key": ALPHA}).status_code == 401
    # Two different credentials: which would count? Refused.
    both = {"X-API-Key": ALPHA, "Authorization": f"Bearer {BETA}"}
    assert httpx.post(f"{server.base_url}/api/v1/none", headers=both, json={}).status_code == 401


# -- DELETE /v1/cache --------------------------------------------------------------------------------


def test_delete_forgets_an_answer_of_the_callers_tenant_only(server):
    content = _prompt("forget")
    body = {"model": MODEL, "messages": [{"role": "user", "content": content}], "max_tokens": 8, "temperature": 0}
    assert _cache(server, ALPHA, content) == "MISS"
    assert _cache(server, BETA, content) == "MISS"
    with _http(server, BETA) as beta:  # beta forgets its own answer, not alpha's
        r = beta.request("DELETE", "/v1/cache", json=body)
        assert r.status_code == 200 and r.json() == {"object": "cache.forget", "forgotten": True}, r.text
        assert beta.request("DELETE", "/v1/cache", json=body).json()["forgotten"] is False
    assert _cache(server, ALPHA, content) == "HIT"
    assert _cache(server, BETA, content) == "MISS"
    with _http(server, ALPHA_NO_FORGET) as no_forget:
        r = no_forget.request("DELETE", "/v1/cache", json=body)
        assert r.status_code == 403 and r.json()["error"]["code"] == 403
    assert _cache(server, ALPHA, content) == "HIT"
    with _http(server, ALPHA) as alpha:
        assert alpha.request("DELETE", "/v1/cache", json=body).json()["forgotten"] is True
    assert _cache(server, ALPHA, content) == "MISS"


def test_delete_a_completion_answer_and_a_whole_sub_scope(server):
    prompt = _prompt("forget-completion")
    client = server.client(api_key=ALPHA)

    def completion(**kw):
        raw = client.completions.with_raw_response.create(model=MODEL, prompt=prompt, max_tokens=8, temperature=0, **kw)
        return raw.headers.get("x-cache")

    assert completion() == "MISS"
    assert completion(extra_headers={"X-Cache-Scope": "team"}) == "MISS"
    assert completion(extra_headers={"X-Cache-Scope": "team"}) == "HIT"
    with _http(server, ALPHA) as alpha:
        r = alpha.request("DELETE", "/v1/cache", json={"prompt": prompt, "max_tokens": 8, "temperature": 0})
        assert r.json()["forgotten"] is True, r.text
        with _http(server, BETA) as beta:  # beta's forget_scope of "team" is beta's "team"
            assert beta.request("DELETE", "/v1/cache", json={"forget_scope": True, "scope": "team"}).status_code == 200
        assert completion(extra_headers={"X-Cache-Scope": "team"}) == "HIT"
        r = alpha.request("DELETE", "/v1/cache", json={"forget_scope": True, "scope": "team"})
        assert r.status_code == 200 and r.json()["object"] == "cache.forget_scope", r.text
        for bad in ({"forget_scope": "yes"}, {"forget_scope": True, "scope": ""}, {"nothing": 1}, [1]):
            r = alpha.request("DELETE", "/v1/cache", json=bad)
            assert r.status_code == 400 and r.json()["error"]["code"] == 400, (bad, r.text)
    assert completion(extra_headers={"X-Cache-Scope": "team"}) == "MISS"
    assert completion() == "MISS"  # forgotten above


# -- the model's pure parts ------------------------------------------------------------------------------


def test_grpc_callers_are_scoped_to_their_keys_tenant(server):
    """gRPC StreamPredict is not behind the HTTP middleware: it must derive the tenant from the
    caller's key the same way (``metadata.tenant`` only narrows within it)."""
    import grpc

    from enhanced_llm.cyllm.proto import ai_service_pb2 as pb2
    from enhanced_llm.cyllm.proto import ai_service_pb2_grpc as pb2_grpc

    prompt = _prompt("grpc-tenant")
    body = {"modelId": MODEL, "prompt": prompt, "generation": {"maxNewTokens": 8, "temperature": 0.0}}
    request = pb2.StreamPredictRequest(
        model_id=MODEL, prompt=prompt, generation=pb2.GenerationParameters(max_new_tokens=8, temperature=0.0),
    )
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = pb2_grpc.AIServiceStub(channel)
        chunks = list(stub.StreamPredict(request, metadata=[("x-api-key", ALPHA)], timeout=120))
        assert chunks and chunks[-1].end_of_stream
        with pytest.raises(grpc.RpcError) as err:
            list(stub.StreamPredict(request, timeout=30))
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED

    def rest(key: str) -> httpx.Response:
        r = httpx.post(f"{server.base_url}/api/v1/inference", json=body, headers={"X-API-Key": key}, timeout=120)
        assert r.status_code == 200, r.text
        return r

    assert rest(BETA).headers["x-cache"] == "MISS"  # another tenant never reads what alpha's gRPC call stored
    hit = rest(ALPHA)
    assert hit.headers["x-cache"] == "HIT"  # the same tenant over REST reads it
    assert hit.json()["choices"][0]["text"] == "".join(c.chunk for c in chunks)


def test_scope_encoding_is_injective():
    from enhanced_llm.serving.tenants import decode_scope, encode_scope

    pairs = [("a", ["b"]), ("a/b", []), ("a", ["b", "c"]), ("a", ["b/c"]), ('a"', []), ("a", ['"]'])]
    encoded = [encode_scope(t, s) for t, s in pairs]
    assert len(set(encoded)) == len(encoded)
    assert [decode_scope(e) for e in encoded] == [(t, s) for t, s in pairs]
    assert decode_scope("plain") is None
    with pytest.raises(ValueError):
        encode_scope("a" * 64, ["\"" * 96, "\"" * 96])


def test_tenant_file_validation(tmp_path):
    from enhanced_llm.serving.tenants import KeyRing, TenantPolicy, load_tenant_keys

    path = tmp_path / "keys.json"
    for bad in ([], {}, {"k": ""}, {"k": 3}, {"k": {"tenant": "a", "allow_refresh": "no"}}, {"k": {"tenant": "a", "x": 1}},
                {" k": "a"}, {"k": "a" * 65}):
        path.write_text(json.dumps(bad))
        with pytest.raises(ValueError, match="keys.json"):
            load_tenant_keys(path)
    path.write_text(json.dumps({"k1": "a", "k2": {"tenant": "b", "allow_refresh": False}}))
    policies = load_tenant_keys(path)
    assert policies == {"k1": TenantPolicy("a"), "k2": TenantPolicy("b", allow_refresh=False)}
    ring = KeyRing.build(["plain"], policies)
    assert ring.authenticate("k2") == TenantPolicy("b", allow_refresh=False)
    assert ring.authenticate("plain").tenant == "default"
    assert ring.authenticate("k3") is None and ring.authenticate("") is None
    with pytest.raises(ValueError):
        KeyRing.build(["k1"], policies)


def _asgi_call(middleware, headers: list[tuple[str, str]], path: str = "/v1/completions"):
    """Drive the middleware with one request; return (status, the context the app saw)."""
    from enhanced_llm.serving.context import _REQUEST

    seen, sent = [], []

    async def app(scope, receive, send):
        seen.append(_REQUEST.get())
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    async def receive():
        return {"type": "http.request", "body": b""}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": path, "root_path": "",
             "headers": [(k.lower().encode(), v.encode()) for k, v in headers]}
    asyncio.run(middleware(app)(scope, receive, send))
    return sent[0]["status"], (seen[0] if seen else None)


def test_trusted_scope_header_names_the_tenant():
    """Edge cases of the header rule the module's server does not run with (a fake app behind the
    real middleware): --trust-scope-header, a trusted gateway key, no keys at all."""
    from enhanced_llm.serving.middleware import CacheScopeMiddleware
    from enhanced_llm.serving.tenants import KeyRing, TenantPolicy

    def with_(**kw):
        return lambda app: CacheScopeMiddleware(app, **kw)

    status, ctx = _asgi_call(with_(trust_scope_header=True), [("X-Cache-Scope", "acme")])
    assert status == 200 and (ctx.tenant, ctx.sub_scopes) == ("acme", ())
    status, ctx = _asgi_call(with_(), [("X-Cache-Scope", "acme")])  # no keys, untrusted: a sub-scope of "default"
    assert (ctx.tenant, ctx.sub_scopes) == ("default", ("acme",))
    status, ctx = _asgi_call(with_(), [])
    assert (ctx.tenant, ctx.sub_scopes, ctx.scope_for()) == ("default", (), '["default"]')
    ring = KeyRing.build([], {"gw": TenantPolicy("gateway", trust_scope_header=True), "user": TenantPolicy("u")})
    status, ctx = _asgi_call(with_(keys=ring), [("Authorization", "Bearer gw"), ("X-Cache-Scope", "acme")])
    assert (ctx.tenant, ctx.sub_scopes) == ("acme", ())
    status, ctx = _asgi_call(with_(keys=ring), [("Authorization", "Bearer gw")])
    assert (ctx.tenant, ctx.sub_scopes) == ("gateway", ())
    status, ctx = _asgi_call(with_(keys=ring), [("Authorization", "Bearer user"), ("X-Cache-Scope", "acme")])
    assert (ctx.tenant, ctx.sub_scopes) == ("u", ("acme",))
    assert _asgi_call(with_(keys=ring), [("Authorization", "Bearer nope")])[0] == 401
    assert _asgi_call(with_(keys=ring), [], path="/health") == (200, None)
    assert _asgi_call(with_(keys=ring), [], path="/metrics")[0] == 200
    assert _asgi_call(with_(keys=ring, protect_metrics=True), [], path="/metrics")[0] == 401
    assert _asgi_call(with_(keys=ring, protect_metrics=True), [], path="/metrics/x")[0] == 401


def test_merge_request_options_scopes_every_request_to_its_tenant():
    from vllm import SamplingParams
    from vllm.exceptions import VLLMValidationError

    from enhanced_llm.serving.context import RequestCacheContext, merge_request_options
    from enhanced_llm.serving.tenants import TenantPolicy

    alpha = RequestCacheContext(tenant="alpha", policy=TenantPolicy("alpha", allow_refresh=False))
    plain = SamplingParams(max_tokens=4)
    merged = merge_request_options(plain, alpha)
    assert merged.extra_args == {"enhanced_llm": {"scope": '["alpha"]'}} and plain.extra_args is None
    body = SamplingParams(max_tokens=4, extra_args={"cache_scope": "b", "cache_mode": "no-store", "other": 1})
    narrowed = RequestCacheContext(tenant="alpha", sub_scopes=("h",), policy=alpha.policy)
    assert merge_request_options(body, narrowed).extra_args == {
        "other": 1, "enhanced_llm": {"scope": '["alpha","h","b"]', "cache": "no-store"}}
    for bad in ({"cache_scope": ""}, {"cache_scope": 7}, {"enhanced_llm.scope": " x"}, {"cache_mode": "refresh"}):
        with pytest.raises(VLLMValidationError):
            merge_request_options(SamplingParams(max_tokens=4, extra_args=bad), alpha)
