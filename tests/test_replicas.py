"""Three ``enhanced-llm serve`` replicas on one Redis: what one stores, the others serve.

Three real server subprocesses (tiny model, semantic cache on, one ``--cache-key-prefix``
shared by the three and unique to this run), started once for the module and in parallel;
the official ``openai`` client with ``with_raw_response`` reads the ``X-Cache*`` headers.

* an answer stored on replica A is an exact hit (from Redis) on B and C, with the same text;
* a paraphrase of a question answered on A is a verified semantic hit on B and C, once the
  vector has reached their indexes through the Redis stream (polled, bounded);
* a replica killed with SIGKILL while requests are in flight on all three costs the other two
  nothing: every request to B and C succeeds, during the kill and after it;
* where nginx is installed, the shipped ``deploy/nginx.conf`` in front of the three: a tenant's
  repeats hit the memory (L1) of one replica, tenants spread over the replicas, and non-streaming
  requests cut off by the kill are retried on a survivor (all succeed).

Not covered here: forgetting an answer on A and seeing it gone on B and C. ``forget()`` is an
engine API (``EnhancedAsyncLLM.forget``) with no HTTP route yet; ``tests/test_forget.py``
covers it with two engines on one Redis.

Keep ``test_killed_replica_costs_the_others_nothing`` last: it kills replica A.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from conftest import unique_prefix
from servers import MODEL, Server, delete_keys, free_port, launch, wait_healthy

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 360  # three engines starting at once on two shared cores
PROPAGATION_TIMEOUT_S = 10.0
SEMANTIC_MAX_TOKENS = 32


class Replica(Server):
    """A replica: no API key, each request scoped with ``X-Cache-Scope``."""

    def chat(self, content: str, *, scope: str, max_tokens: int = 8, no_store: bool = False):
        """One greedy chat request: (lower-cased response headers, answer text)."""
        extra_body = {"vllm_xargs": {"enhanced_llm.cache": "no-store"}} if no_store else None
        raw = self.client(timeout=120).chat.completions.with_raw_response.create(
            model=MODEL, messages=[{"role": "user", "content": content}], max_tokens=max_tokens, temperature=0,
            extra_headers={"X-Cache-Scope": scope}, extra_body=extra_body,
        )
        return {k.lower(): v for k, v in raw.headers.items()}, raw.parse().choices[0].message.content


def _start(name: str, prefix: str, log: Path) -> Replica:
    return launch(
        log, "--max-num-seqs", "32", "--enable-semantic-cache", "--similarity-threshold", "0.8",
        name=name, api_key=None, kv_bytes=128 << 20, prefix=prefix, cls=Replica,
    )


@pytest.fixture(scope="module")
def replicas(redis_available, tmp_path_factory) -> Iterator[list[Replica]]:
    assert redis_available, "tests need Redis at 127.0.0.1:6379"
    prefix, logs = unique_prefix("replicas"), tmp_path_factory.mktemp("replicas")
    started = time.monotonic()
    group = [_start(name, prefix, logs / f"{name}.log") for name in "ABC"]
    try:
        wait_healthy(group, timeout=START_TIMEOUT_S)
        print(f"\n3 replicas healthy after {time.monotonic() - started:.1f}s", file=sys.stderr)
        yield group
    finally:
        for r in group:
            r.kill()
        delete_keys(prefix)


@pytest.fixture(scope="module")
def balancer(replicas, tmp_path_factory) -> Iterator[Replica | None]:
    """The shipped ``deploy/nginx.conf`` in front of the three replicas (None where nginx is not installed)."""
    exe = shutil.which("nginx")
    if exe is None:
        yield None
        return
    work, port = tmp_path_factory.mktemp("nginx"), free_port()
    conf = (ROOT / "deploy" / "nginx.conf").read_text()
    for i, r in enumerate(replicas, 1):
        assert f"server replica-{i}:8000" in conf
        conf = conf.replace(f"server replica-{i}:8000", f"server {r.base_url.removeprefix('http://')}")
    assert "listen 8000;" in conf
    conf = conf.replace("listen 8000;", f"listen 127.0.0.1:{port};").replace(
        "http {", f"http {{\n    access_log off;\n    client_body_temp_path {work}/body;\n    proxy_temp_path {work}/proxy;", 1)
    (work / "nginx.conf").write_text(conf)
    log = work / "nginx.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([exe, "-p", str(work), "-c", str(work / "nginx.conf"),
                                 "-g", f"daemon off; pid {work}/nginx.pid; error_log {work}/error.log;"],
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    lb = Replica(proc, f"http://127.0.0.1:{port}", "", log, "LB", api_key=None)
    try:
        deadline = time.time() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    pytest.fail(f"nginx did not start:\n{log.read_text()}\n{(work / 'error.log').read_text()}")
                time.sleep(0.05)
        yield lb
    finally:
        proc.kill()
        proc.wait(timeout=10)


def _scope(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:8]}"


def _poll(replica: Replica, question: str, scope: str, source: str, max_tokens: int) -> tuple[dict[str, str], str, float]:
    """Ask ``question`` (no-store: a retry must not turn into a hit of this replica's own answer) until
    the ``source`` level (exact / semantic) answers it, at most ``PROPAGATION_TIMEOUT_S``; the last
    headers, answer and the time it took."""
    started = time.monotonic()
    while True:
        headers, answer = replica.chat(question, scope=scope, max_tokens=max_tokens, no_store=True)
        waited = time.monotonic() - started
        if headers.get("x-cache-source") == source or waited > PROPAGATION_TIMEOUT_S:
            return headers, answer, waited
        time.sleep(0.1)


# -- sharing --------------------------------------------------------------------------------------


def test_answer_stored_on_one_replica_is_an_exact_hit_on_the_others(replicas):
    a, b, c = replicas
    scope, content = _scope("exact"), f"{uuid.uuid4().hex[:8]} what does a replica share"
    headers, original = a.chat(content, scope=scope)
    assert headers["x-cache"] == "MISS"
    for other in (b, c):
        # A writes to Redis in the background: usually there before its response, polled to be sure.
        headers, answer, waited = _poll(other, content, scope, "exact", max_tokens=8)
        assert (headers["x-cache"], headers.get("x-cache-source"), headers.get("x-cache-level")) == ("HIT", "exact", "redis"), \
            f"no exact hit after {waited:.1f}s"
        assert answer == original
        headers, answer = other.chat(content, scope=scope)  # promoted to this replica's memory
        assert (headers["x-cache"], headers.get("x-cache-level")) == ("HIT", "memory")
        assert answer == original
    # Another tenant's identical request shares nothing, on any replica.
    assert b.chat(content, scope=_scope("other"))[0]["x-cache"] == "MISS"


def test_paraphrase_of_an_answer_stored_on_one_replica_is_a_semantic_hit_on_the_others(replicas):
    a, b, c = replicas
    scope = _scope("semantic")
    headers, original = a.chat("How do I convert Celsius to Fahrenheit?", scope=scope, max_tokens=SEMANTIC_MAX_TOKENS)
    assert headers["x-cache"] == "MISS"
    for other in (b, c):
        headers, answer, waited = _poll(other, "How can I convert Celsius into Fahrenheit?", scope, "semantic", SEMANTIC_MAX_TOKENS)
        assert (headers["x-cache"], headers.get("x-cache-source")) == ("HIT", "semantic"), f"no semantic hit after {waited:.1f}s"
        assert answer == original
    # The verifier still refuses a near miss that another replica's vector is close to.
    assert b.chat("How do I convert Fahrenheit to Celsius?", scope=scope, max_tokens=SEMANTIC_MAX_TOKENS,
                  no_store=True)[0]["x-cache"] == "MISS"


def test_load_balancer_keeps_each_tenant_on_one_replica(replicas, balancer):
    """Through ``deploy/nginx.conf``: a tenant's repeat is a hit in the memory of the replica that
    stored it (affinity), and the tenants spread over the replicas."""
    if balancer is None:
        pytest.skip("nginx is not installed: the shipped nginx.conf is exercised where it is")
    before = [r.metric("enhanced_llm_cache_misses_total") for r in replicas]
    for i in range(12):
        scope, content = _scope(f"tenant{i}"), f"{uuid.uuid4().hex[:8]} balanced question"
        first, original = balancer.chat(content, scope=scope)
        assert first["x-cache"] == "MISS"
        again, answer = balancer.chat(content, scope=scope)
        assert (again["x-cache"], again.get("x-cache-level"), answer) == ("HIT", "memory", original)
    served = [r.metric("enhanced_llm_cache_misses_total") - b for r, b in zip(replicas, before)]
    assert sum(served) >= 12 and sum(1 for n in served if n > 0) >= 2, served


# -- a replica dies (keep last: it kills A) ----------------------------------------------------------


def test_killed_replica_costs_the_others_nothing(replicas, balancer):
    a, b, c = replicas
    scope = _scope("kill")
    stored = f"{uuid.uuid4().hex[:8]} stored before the kill"
    _, stored_answer = a.chat(stored, scope=scope)
    assert _poll(b, stored, scope, "exact", max_tokens=8)[0].get("x-cache-source") == "exact"  # in Redis now

    outcomes: dict[str, list[object]] = {"A": [], "B": [], "C": [], "LB": []}
    lock = threading.Lock()

    streaming = threading.Semaphore(0)  # released by each long request at its first line

    def long_on_a(i: int) -> None:
        # Streamed, so that the kill can wait until A is answering. Eight with n=4 fill A's 32
        # sequences for several seconds here; four with n=1 took 1.5 s, and a kill timed by polling
        # A's metrics could come after they had all finished.
        try:
            with httpx.Client(timeout=120) as http, http.stream("POST", f"{a.base_url}/v1/completions", json={
                "model": MODEL, "prompt": f"in flight {uuid.uuid4().hex} {i}", "max_tokens": 400,
                "temperature": 0.8, "n": 4, "ignore_eos": True, "stream": True,
            }) as r:
                for n, _ in enumerate(r.iter_lines()):
                    if n == 0:
                        streaming.release()
            result: object = r.status_code
        except httpx.HTTPError as exc:
            result = exc
        with lock:
            outcomes["A"].append(result)

    def through_balancer(i: int) -> None:
        # Non-streaming: nginx sees no response header before the end, so one cut off by the kill
        # is retried on the next replica (proxy_next_upstream ... non_idempotent).
        try:
            with httpx.Client(timeout=120) as http:
                r = http.post(f"{balancer.base_url}/v1/completions", headers={"X-Cache-Scope": _scope(f"lb{i}")}, json={
                    "model": MODEL, "prompt": f"balanced {uuid.uuid4().hex} {i}", "max_tokens": 200,
                    "temperature": 0, "ignore_eos": True,
                })
            result: object = r.status_code
        except httpx.HTTPError as exc:
            result = exc
        with lock:
            outcomes["LB"].append(result)

    def on_survivor(replica: Replica, i: int) -> None:
        # Alternate new questions (the engine answers) and the one A stored (a Redis or memory hit).
        content = stored if i % 2 else f"{uuid.uuid4().hex[:8]} during the kill {i}"
        try:
            headers, answer = replica.chat(content, scope=scope)
            result: object = ("ok", headers["x-cache"], answer == stored_answer if content == stored else None)
        except Exception as exc:  # noqa: BLE001 - recorded and asserted below
            result = exc
        with lock:
            outcomes[replica.name].append(result)

    with ThreadPoolExecutor(max_workers=24) as pool:
        futures = [pool.submit(on_survivor, r, i) for i in range(8) for r in (b, c)]
        if balancer is not None:
            futures += [pool.submit(through_balancer, i) for i in range(9)]
        futures += [pool.submit(long_on_a, i) for i in range(8)]
        # Kill A at once when its first long request streams, while the others are still generating.
        assert streaming.acquire(timeout=60), "A's long requests never started streaming"
        a.kill()
        futures += [pool.submit(on_survivor, r, i) for i in range(8, 16) for r in (b, c)]
        for f in futures:
            f.result(timeout=180)

    assert not a.alive()
    assert any(not isinstance(o, int) for o in outcomes["A"]), f"A finished everything before the kill: {outcomes['A']}"
    for name in ("B", "C"):
        assert len(outcomes[name]) == 16
        failures = [o for o in outcomes[name] if not (isinstance(o, tuple) and o[0] == "ok")]
        assert not failures, f"replica {name} lost requests: {failures}"
        assert all(o[2] for o in outcomes[name] if o[2] is not None), f"{name} served a different stored answer"
        assert sum(1 for o in outcomes[name] if o[1] == "HIT") >= 8  # A's stored answer, every time
    if balancer is not None:  # tenants that hash to A are moved, in flight or new
        assert outcomes["LB"] == [200] * 9, outcomes["LB"]
    # After the kill: both survivors are healthy and still share through Redis.
    for r in (b, c):
        assert httpx.get(f"{r.base_url}/health", timeout=10).status_code == 200
    content = f"{uuid.uuid4().hex[:8]} after the kill"
    _, answer = b.chat(content, scope=scope)
    headers, again, _ = _poll(c, content, scope, "exact", max_tokens=8)
    assert (headers["x-cache"], headers.get("x-cache-level"), again) == ("HIT", "redis", answer)
