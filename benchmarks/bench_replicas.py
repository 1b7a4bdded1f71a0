"""Replicas on one Redis: how fast one replica's answers reach the others, and what a late replica does.

Starts ``--replicas`` ``enhanced-llm serve`` processes (tiny model, MULTI cache, semantic cache on)
sharing one Redis and one ``--cache-key-prefix`` (unique to the run, deleted afterwards).

* **Propagation.** For each English paraphrase pair of ``benchmarks/data`` (label ``same``; at
  least 50 in a full run) a fresh tenant scope asks replica A the first question (a miss: the
  engine answers and A stores it). From the moment A's response arrives, all at once and for at
  most ``--poll-timeout`` seconds, every other replica is

  - asked the same question until it is an exact hit (*exact answer served*),
  - watched through its ``/metrics`` until its semantic index holds one more vector (*vector in
    the index*: the propagation itself, through the Redis stream),
  - once the vector is in its index, asked the paraphrase until it is a semantic hit (*paraphrase
    served*: also needs the lookup to finish within ``lookup_timeout`` while the engine races it,
    so it counts the lookup time-outs of a loaded machine too; the replicas' semantic counters are
    reported next to it).

  Polls are ``no-store`` (a miss never stores an answer of its own); a served delay includes one
  request, and a poll that missed costs one engine generation (``--max-tokens`` tokens). A's own
  announcement time is read from the change stream's entry id (Redis server time). After the
  polls, A itself is asked the paraphrase: a pair that A's own verifier refuses is left out of the
  *served* figure (counted). Target: p99 <= 1 s.
* **A replica that starts late.** ``--sizes`` entries (random unit vectors, one tenant scope) are
  written straight into the semantic namespace with a Redis pipeline, in the store's own format
  (:class:`enhanced_llm.semantic.store.SemanticStore`), so that the namespace holds that many in
  all. Then (1) an in-process :class:`~enhanced_llm.semantic.SemanticCache`, configured as the
  server configures it, starts and hydrates (its progress bar shows on a terminal), and (2) a new
  server process starts on the same Redis: its time to healthy; whether it answers the
  propagation part's questions from the cache at once (exact from Redis; a paraphrase only once
  its index holds the entry: it serves while it hydrates in the background); the hydration time
  it logs (``semantic index hydrated: N entries in S s``); and the same questions again after
  that line (target: every one a hit).

Prints a table with the targets and writes JSON (``--output``, default
``benchmarks/results/replicas.json``); ``--plot`` also writes a PNG next to it (matplotlib).
``--quick``: 20 pairs, 10k entries only. The machine may be shared: delays are upper bounds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from _procs import free_port, percentile as pct, stop_process

MODEL = "embedded:tiny"
DATA = Path(__file__).parent / "data"
RESULTS = Path(__file__).parent / "results"
HYDRATED_LOG = re.compile(r"semantic index (?:re-)?hydrated: (\d+) entries in ([\d.]+) s \((.*?)\)")
PLANT_SCOPE = "bench-hydration"


def paraphrase_pairs(limit: int) -> list[tuple[str, str]]:
    """English pairs labelled ``same`` (the adversarial set's first: its paraphrases all hit), deduplicated."""
    pairs, seen = [], set()
    for name in ("semantic_adversarial.json", "semantic_eval_en.json"):
        for p in json.loads((DATA / name).read_text())["pairs"]:
            if p["label"] == "same" and p.get("lang", "en") == "en" and p["a"] not in seen and p["a"] != p["b"]:
                seen.add(p["a"])
                pairs.append((p["a"], p["b"]))
    return pairs[:limit]


# -- server processes ------------------------------------------------------------------------------


class Replica:
    """One ``enhanced-llm serve`` subprocess (its own process group)."""

    def __init__(self, name: str, prefix: str, redis_url: str, workdir: Path, kv_bytes: int) -> None:
        self.name, self.port, self.log = name, free_port(), workdir / f"replica-{name}.log"
        self.base_url = f"http://127.0.0.1:{self.port}"
        cmd = [
            sys.executable, "-m", "enhanced_llm.cli", "serve", MODEL, "--host", "127.0.0.1", "--port", str(self.port),
            "--kv-cache-memory-bytes", str(kv_bytes), "--max-model-len", "512", "--max-num-seqs", "32", "--enforce-eager",
            "--cache-type", "multi", "--redis-url", redis_url, "--cache-key-prefix", prefix,
            "--enable-semantic-cache", "--similarity-threshold", "0.8", "--disable-uvicorn-access-log",
        ]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        self.started = time.monotonic()
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self.healthy_after: float | None = None

    def poll_healthy(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"replica {self.name} exited ({self.proc.returncode}):\n{self.log.read_text()[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{self.base_url}/health", timeout=2).status_code == 200:
                self.healthy_after = time.monotonic() - self.started
                return True
        return False

    def hydration_logged(self) -> list[dict[str, Any]]:
        """The completed hydrations the server logged (one per vector space; a start that Redis broke
        off midway is retried in the background and logs ``re-hydrated``)."""
        return [{"entries": int(n), "seconds": float(sec), "namespace": ns}
                for n, sec, ns in HYDRATED_LOG.findall(self.log.read_text(errors="replace"))]

    def hydration_lines(self) -> list[str]:
        """Every log line about hydration (incomplete starts included), at most 12."""
        return [line.strip()[-300:] for line in self.log.read_text(errors="replace").splitlines() if "hydrat" in line][:12]

    def stop(self) -> None:
        stop_process(self.proc)


def wait_healthy(replicas: list[Replica], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    pending = list(replicas)
    while pending:
        pending = [r for r in pending if not r.poll_healthy()]
        if pending and time.monotonic() > deadline:
            raise RuntimeError(f"replicas {[r.name for r in pending]} not healthy after {timeout}s:\n"
                               f"{pending[0].log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.5)


# -- requests ----------------------------------------------------------------------------------------


async def chat(http: httpx.AsyncClient, replica: Replica, content: str, scope: str, max_tokens: int,
               no_store: bool = False) -> tuple[dict[str, str], str]:
    body: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": content}],
                            "max_tokens": max_tokens, "temperature": 0}
    if no_store:
        body["vllm_xargs"] = {"enhanced_llm.cache": "no-store"}
    r = await http.post(f"{replica.base_url}/v1/chat/completions", json=body, headers={"X-Cache-Scope": scope})
    r.raise_for_status()
    return {k.lower(): v for k, v in r.headers.items()}, r.json()["choices"][0]["message"]["content"]


async def poll_until(http: httpx.AsyncClient, replica: Replica, content: str, scope: str, source: str,
                     since: float, args: argparse.Namespace) -> dict[str, Any]:
    """Ask until ``source`` (exact / semantic) answers: delay from ``since``, polls, answer."""
    polls = 0
    while True:
        polls += 1
        headers, text = await chat(http, replica, content, scope, args.max_tokens, no_store=True)
        now = time.perf_counter()
        if headers.get("x-cache-source") == source:
            return {"delay_s": now - since, "polls": polls, "level": headers.get("x-cache-level"), "text": text}
        if now - since > args.poll_timeout:
            return {"delay_s": None, "polls": polls, "level": None, "text": None}


async def metric_values(http: httpx.AsyncClient, replica: Replica) -> dict[str, float]:
    """The unlabelled ``enhanced_llm_*`` samples of a replica's ``/metrics``."""
    text = (await http.get(f"{replica.base_url}/metrics")).text
    return {m.group(1): float(m.group(2)) for m in re.finditer(r"^(enhanced_llm_\w+) (\S+)$", text, re.M)}


async def poll_index(http: httpx.AsyncClient, replica: Replica, want: float, since: float,
                     args: argparse.Namespace) -> dict[str, Any]:
    """Poll the replica's ``semantic_index_entries`` gauge until it reaches ``want``."""
    polls = 0
    while True:
        polls += 1
        n = (await metric_values(http, replica)).get("enhanced_llm_semantic_index_entries", 0.0)
        now = time.perf_counter()
        if n >= want:
            return {"delay_s": now - since, "polls": polls}
        if now - since > args.poll_timeout:
            return {"delay_s": None, "polls": polls}
        await asyncio.sleep(0.02)


async def published_at(redis_client: Any, store: Any, question: str) -> float | None:
    """Redis server time (s) at which A announced ``question``'s vector on the change stream."""
    for msg_id, fields in await redis_client.xrevrange(store.stream_key, count=50):
        entry = store.codec.record(fields, "bench")  # checked as a follower checks it
        if entry is not None and entry.question == question:
            return int(msg_id.split(b"-")[0]) / 1000
    return None


SEMANTIC_COUNTERS = ("semantic_lookups_total", "semantic_timeouts_total", "semantic_misses_total", "semantic_hits_total")


async def propagation(replicas: list[Replica], pairs: list[tuple[str, str]], salt: str, store: Any,
                      args: argparse.Namespace) -> dict[str, Any]:
    import redis.asyncio as aioredis

    a, others = replicas[0], replicas[1:]
    rows: list[dict[str, Any]] = []
    redis_client = aioredis.Redis.from_url(args.redis_url)
    async with httpx.AsyncClient(timeout=120) as http:
        counters_before = {r.name: await metric_values(http, r) for r in others}
        for i, (question, paraphrase) in enumerate(pairs):
            scope = f"{salt}-{i}"
            entries = [(await metric_values(http, r)).get("enhanced_llm_semantic_index_entries", 0.0) for r in others]
            headers, original = await chat(http, a, question, scope, args.max_tokens)
            since, since_wall = time.perf_counter(), time.time()
            index_jobs = [asyncio.ensure_future(poll_index(http, r, n + 1, since, args)) for r, n in zip(others, entries)]

            async def semantic_after_index(r: Replica, arrived: asyncio.Future) -> dict[str, Any]:
                await arrived  # ask once the vector is there (or the wait timed out): a miss before costs a generation
                return await poll_until(http, r, paraphrase, scope, "semantic", since, args)

            jobs = []
            for r, arrived in zip(others, index_jobs):
                jobs += [poll_until(http, r, question, scope, "exact", since, args), semantic_after_index(r, arrived)]
            results = list(await asyncio.gather(*jobs)) + [await j for j in index_jobs]
            own = (await chat(http, a, paraphrase, scope, args.max_tokens, no_store=True))[0].get("x-cache-source")
            published = await published_at(redis_client, store, question)
            row: dict[str, Any] = {"question": question, "paraphrase": paraphrase, "stored_on_a": headers["x-cache"] == "MISS",
                                   "a_verifier_accepts": own == "semantic",
                                   "published_after_s": None if published is None else published - since_wall}
            names = [(r, s) for r in others for s in ("exact", "semantic")] + [(r, "index") for r in others]
            for (r, src), res in zip(names, results):
                if "text" in res:
                    text = res.pop("text")
                    res["same_text"] = text == original if res["delay_s"] is not None else None
                row[f"{r.name}_{src}"] = res
            rows.append(row)
            print(f"  pair {i + 1}/{len(pairs)}: " + ", ".join(
                f"{k} {v['delay_s'] * 1000:.0f} ms" if v["delay_s"] is not None else f"{k} none"
                for k, v in row.items() if isinstance(v, dict)), file=sys.stderr)
        counters_after = {r.name: await metric_values(http, r) for r in others}
    await redis_client.aclose()

    def summary(source: str, only_accepted: bool) -> dict[str, Any]:
        use = [r for r in rows if r["a_verifier_accepts"]] if only_accepted else rows
        cells = [r[f"{rep.name}_{source}"] for r in use for rep in others]
        delays = [c["delay_s"] for c in cells if c["delay_s"] is not None]
        return {
            "measured": len(cells), "hits": len(delays), "not_within_timeout": len(cells) - len(delays),
            "first_poll_hit": sum(1 for c in cells if c["polls"] == 1 and c["delay_s"] is not None),
            "wrong_text": sum(1 for c in cells if c.get("same_text") is False),
            "p50_ms": _ms(pct(delays, 50)), "p99_ms": _ms(pct(delays, 99)), "max_ms": _ms(max(delays, default=None)),
            "delays_ms": [round(d * 1000, 2) for d in delays],
        }

    published = [r["published_after_s"] for r in rows if r["published_after_s"] is not None]
    return {
        "pairs": len(rows),
        "pairs_a_verifier_refuses": sum(1 for r in rows if not r["a_verifier_accepts"]),
        "exact": summary("exact", False),
        "semantic_index": summary("index", False),
        "semantic": summary("semantic", True),
        "semantic_published_by_a": {"measured": len(published), "p50_ms": _ms(pct(published, 50)),
                                    "p99_ms": _ms(pct(published, 99)), "max_ms": _ms(max(published, default=None))},
        "semantic_counters_on_others": {
            name: {c: counters_after[name].get(f"enhanced_llm_{c}", 0.0) - counters_before[name].get(f"enhanced_llm_{c}", 0.0)
                   for c in SEMANTIC_COUNTERS}
            for name in counters_after
        },
        "rows": rows,
    }


def _ms(v: float | None) -> float | None:
    return None if v is None else round(v * 1000, 2)


# -- hydration ---------------------------------------------------------------------------------------


def _semantic_cache(prefix: str, redis_url: str) -> Any:
    """A SemanticCache configured as ``enhanced-llm serve --enable-semantic-cache`` configures its own."""
    from enhanced_llm.cache.redis_store import make_redis_client
    from enhanced_llm.config import CacheConfig, SimilarityConfig
    from enhanced_llm.semantic import SemanticCache

    cache_config = CacheConfig(cache_type="multi", redis_url=redis_url, key_prefix=prefix)
    client = make_redis_client(url=redis_url, timeout=cache_config.redis_timeout + 2.0)
    return SemanticCache(SimilarityConfig(similarity_threshold=0.8), redis=client, key_prefix=f"{prefix}:sem:",
                         redis_timeout=cache_config.redis_timeout, entry_ttl=cache_config.ttl), client


async def namespace_of(prefix: str, redis_url: str) -> Any:
    """The store of the first vector space (model) as a server on ``prefix`` would use it."""
    cache, client = _semantic_cache(prefix, redis_url)
    await cache.start()
    store = cache.spaces[0].store
    dim = cache.spaces[0].embedder.dimension
    await cache.close()
    await client.aclose()
    return store, dim


def count_entries(redis_url: str, store: Any) -> int:
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        return sum(1 for _ in client.scan_iter(match=f"{store._key('')}*", count=1000))
    finally:
        client.close()


def plant(redis_url: str, store: Any, dim: int, count: int, start: int) -> float:
    """Write ``count`` entries in the store's own format with a pipeline; returns seconds taken."""
    import redis

    rng = np.random.default_rng(start)
    client = redis.Redis.from_url(redis_url)
    ttl = 3600
    started = time.perf_counter()
    try:
        for lo in range(start, start + count, 2000):
            n = min(2000, start + count - lo)
            vectors = rng.standard_normal((n, dim)).astype(np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            pipe = client.pipeline(transaction=False)
            for j in range(n):
                entry_id = f"planted-{lo + j:07d}"
                pipe.set(store._key(entry_id), store.codec.pack(entry_id, PLANT_SCOPE, f"planted question number {lo + j}", vectors[j]), ex=ttl)
            pipe.execute()
    finally:
        client.close()
    return time.perf_counter() - started


async def hydrate_in_process(prefix: str, redis_url: str) -> dict[str, Any]:
    """Start a SemanticCache (model load excluded) and report its hydration and its index afterwards."""
    cache, client = _semantic_cache(prefix, redis_url)
    started = time.perf_counter()
    await cache.start()
    total = time.perf_counter() - started
    space = cache.spaces[0]
    index = space.index.stats() if space.index is not None else {}
    await cache.close()
    await client.aclose()
    return {**space.hydration, "start_seconds_with_model_load": round(total, 3),
            "index": index}


async def late_replica(name: str, prefix: str, args: argparse.Namespace, workdir: Path, store: Any,
                       probe: list[dict[str, Any]]) -> dict[str, Any]:
    """A server that starts on a full namespace: asked the earlier questions as soon as it is healthy
    (it serves while it hydrates in the background), then again once it logged its hydration."""
    replica = Replica(name, prefix, args.redis_url, workdir, args.kv_cache_bytes)
    try:
        wait_healthy([replica], args.start_timeout)
        out: dict[str, Any] = {"healthy_after_s": round(replica.healthy_after or 0, 1), "probes": len(probe)}
        async with httpx.AsyncClient(timeout=120) as http:
            before = await metric_values(http, replica)
            out["at_once"] = await _probe(http, replica, probe, args)
            healthy = time.monotonic()
            while (logged := _logged(replica, store)) is None and time.monotonic() - healthy < args.hydration_timeout:
                await asyncio.sleep(0.25)
            out["logged"], out["logged_all_spaces"] = logged, replica.hydration_logged()
            out["hydrated_after_healthy_s"] = round(time.monotonic() - healthy, 1) if logged is not None else None
            out["hydration_log"] = replica.hydration_lines()
            out["after_hydration"] = await _probe(http, replica, probe, args) if logged is not None else None
            after = await metric_values(http, replica)
        out.update(semantic_counters={c: after.get(f"enhanced_llm_{c}", 0.0) - before.get(f"enhanced_llm_{c}", 0.0)
                                      for c in SEMANTIC_COUNTERS},
                   index_entries=after.get("enhanced_llm_semantic_index_entries"))
        return out
    finally:
        replica.stop()


def _logged(replica: Replica, store: Any) -> dict[str, Any] | None:
    return next((x for x in replica.hydration_logged() if x["namespace"] == store.ns), None)


async def _probe(http: httpx.AsyncClient, replica: Replica, probe: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    """Each earlier question (an exact hit?) and its paraphrase (a semantic hit, within ``probe_tries``?)."""
    exact = semantic = 0
    tries: list[int] = []
    for row in probe:
        h, _ = await chat(http, replica, row["question"], row["scope"], args.max_tokens, no_store=True)
        exact += h.get("x-cache-source") == "exact"
        for attempt in range(1, args.probe_tries + 1):  # a lookup may time out on a loaded machine
            h, _ = await chat(http, replica, row["paraphrase"], row["scope"], args.max_tokens, no_store=True)
            if h.get("x-cache-source") == "semantic":
                semantic += 1
                tries.append(attempt)
                break
    return {"exact_hits": exact, "semantic_hits": semantic, "semantic_tries": tries}


def delete_prefix(redis_url: str, prefix: str) -> int:
    import redis

    client = redis.Redis.from_url(redis_url)
    n = 0
    try:
        batch = []
        for key in client.scan_iter(match=f"{prefix}*", count=5000):
            batch.append(key)
            if len(batch) >= 5000:
                n += client.delete(*batch)
                batch = []
        if batch:
            n += client.delete(*batch)
    finally:
        client.close()
    return n


# -- report -------------------------------------------------------------------------------------------


def table(report: dict[str, Any]) -> str:
    lines: list[str] = []

    def row(label: str, value: Any, target: str = "") -> None:
        lines.append(f"{label:60} {str(value):>24}  {target}")

    row("measure", "value", "target")
    row("replicas started in parallel, all healthy after (s)", report["startup_s"])
    p = report["propagation"]
    labels = {"exact": "exact answer served by B, C", "semantic_index": "vector in the index of B, C",
              "semantic": "paraphrase served by B, C"}
    for source in ("exact", "semantic_index", "semantic"):
        s = p[source]
        met = report["targets"][f"{source}_propagation_p99_le_1s"]
        row(f"{labels[source]}: p50 / p99 ms ({s['hits']}/{s['measured']})", f"{s['p50_ms']} / {s['p99_ms']}",
            f"p99 <= 1000 ms, all within {report['config']['poll_timeout']} s: {'met' if met else 'NOT met'}")
        if source != "semantic_index":
            row(f"  {source}: served on the first request / wrong text", f"{s['first_poll_hit']} / {s['wrong_text']}", "wrong text: 0")
    pub = p["semantic_published_by_a"]
    row("  A announces the vector (stream), after its response: p50 / p99 ms", f"{pub['p50_ms']} / {pub['p99_ms']}")
    for name, c in p["semantic_counters_on_others"].items():
        row(f"  {name}: semantic lookups / timed out / misses", f"{c['semantic_lookups_total']:.0f} / "
            f"{c['semantic_timeouts_total']:.0f} / {c['semantic_misses_total']:.0f}")
    row("pairs A itself refuses (left out of semantic)", p["pairs_a_verifier_refuses"])
    for h in report["hydration"]:
        ip, late = h["in_process"], h.get("late_replica") or {}
        row(f"{h['entries']:,} entries: planted in (s)", f"{h['plant_seconds']:.2f}")
        row("  in-process hydration (s), entries read", f"{ip.get('seconds', 0):.2f}, {ip.get('entries')}")
        if late:
            logged = late.get("logged") or {}
            row("  late replica: healthy after (s)", late["healthy_after_s"])
            n, now = late["probes"], late["at_once"]
            row("  late replica, at once: earlier answers, exact / semantic hits",
                f"{now['exact_hits']}/{n}, {now['semantic_hits']}/{n}", "exact: all (semantic: as hydrated)")
            row("  late replica: hydration it logged (s), entries", f"{logged.get('seconds')}, {logged.get('entries')}")
            row("  late replica: hydrated, seconds after healthy (incl. the first probes)", late.get("hydrated_after_healthy_s"))
            then = late.get("after_hydration")
            if then is not None:
                every = then["exact_hits"] == then["semantic_hits"] == n
                row("  late replica, hydrated: earlier answers, exact / semantic hits",
                    f"{then['exact_hits']}/{n}, {then['semantic_hits']}/{n}", f"all: {'met' if every else 'NOT met'}")
            else:
                row("  late replica, hydrated", f"not within {report['config'].get('hydration_timeout')} s", "NOT met")
            c = late["semantic_counters"]
            row("  late replica: semantic lookups / timed out", f"{c['semantic_lookups_total']:.0f} / {c['semantic_timeouts_total']:.0f}")
    return "\n".join(lines)


def plot(report: dict[str, Any], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"matplotlib is not installed: no plot written ({path})", file=sys.stderr)
        return
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for source, colour in (("exact", "tab:blue"), ("semantic_index", "tab:green"), ("semantic", "tab:orange")):
        d = sorted(report["propagation"][source]["delays_ms"])
        if d:
            ax1.plot(d, [(i + 1) / len(d) for i in range(len(d))], color=colour, label=f"{source} (n={len(d)})")
    ax1.axvline(1000, color="red", ls="--", lw=0.8, label="p99 target 1 s")
    ax1.set(title="propagation: after A's response, on B and C", xlabel="ms (served: includes one request)",
            ylabel="share of measurements", xscale="log")
    ax1.legend(fontsize=8)
    sizes = [h["entries"] for h in report["hydration"]]
    x = np.arange(len(sizes))
    ax2.bar(x - 0.2, [h["in_process"].get("seconds", 0) for h in report["hydration"]], 0.4, label="in process")
    ax2.bar(x + 0.2, [((h.get("late_replica") or {}).get("logged") or {}).get("seconds", 0) for h in report["hydration"]],
            0.4, label="late server (its log)")
    ax2.set_xticks(x, [f"{s:,}" for s in sizes])
    ax2.set(title="hydration of a replica that starts late", xlabel="semantic entries in Redis", ylabel="seconds")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"plot written to {path}", file=sys.stderr)


# -- main ----------------------------------------------------------------------------------------------


async def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    prefix, salt = f"bench-replicas-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex[:6]
    pairs = paraphrase_pairs(args.pairs)
    report: dict[str, Any] = {"model": MODEL, "prefix": prefix, "config": {
        k: getattr(args, k) for k in ("replicas", "pairs", "sizes", "max_tokens", "poll_timeout", "redis_url", "hydration_timeout")}}
    started = time.monotonic()
    replicas = [Replica(chr(ord("A") + i), prefix, args.redis_url, workdir, args.kv_cache_bytes) for i in range(args.replicas)]
    try:
        wait_healthy(replicas, args.start_timeout)
        report["startup_s"] = round(time.monotonic() - started, 1)
        print(f"{len(replicas)} replicas healthy after {report['startup_s']} s; {len(pairs)} pairs", file=sys.stderr)
        store, dim = await namespace_of(prefix, args.redis_url)
        report["propagation"] = await propagation(replicas, pairs, salt, store, args)
        probe = [{"scope": f"{salt}-{i}", "question": r["question"], "paraphrase": r["paraphrase"]}
                 for i, r in enumerate(report["propagation"]["rows"]) if r["a_verifier_accepts"]][: args.probes]
        report["hydration"] = []
        for size in sorted(args.sizes):
            have = count_entries(args.redis_url, store)
            seconds = plant(args.redis_url, store, dim, max(0, size - have), start=have)
            print(f"planted {size - have} entries ({size} in all) in {seconds:.1f} s; hydrating in process", file=sys.stderr)
            entry: dict[str, Any] = {"entries": size, "plant_seconds": round(seconds, 3),
                                     "in_process": await hydrate_in_process(prefix, args.redis_url)}
            if not args.no_late_server:
                print(f"starting a late replica on {size} entries", file=sys.stderr)
                entry["late_replica"] = await late_replica(f"late-{size}", prefix, args, workdir, store, probe)
            report["hydration"].append(entry)
    finally:
        for r in replicas:
            r.stop()
        report["keys_deleted"] = delete_prefix(args.redis_url, prefix)
    p = report["propagation"]
    report["targets"] = {
        f"{s}_propagation_p99_le_1s": p[s]["p99_ms"] is not None and p[s]["p99_ms"] <= 1000 and p[s]["not_within_timeout"] == 0
        for s in ("exact", "semantic_index", "semantic")
    }
    report["wall_s"] = round(time.monotonic() - started, 1)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--pairs", type=int, default=100, help="paraphrase pairs for the propagation part (>= 50)")
    parser.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=[10_000, 100_000],
                        help="semantic entries in Redis when the late replica starts (comma-separated)")
    parser.add_argument("--probes", type=int, default=10, help="earlier answers the late replica is asked for")
    parser.add_argument("--probe-tries", type=int, default=5, help="times the late replica is asked each paraphrase at most")
    parser.add_argument("--hydration-timeout", type=float, default=300, help="how long the late replica may take to log its hydration")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--poll-timeout", type=float, default=5.0)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--kv-cache-bytes", type=int, default=128 << 20)
    parser.add_argument("--start-timeout", type=float, default=480)
    parser.add_argument("--no-late-server", action="store_true", help="hydration in process only")
    parser.add_argument("--quick", action="store_true", help="20 pairs and 10k entries")
    parser.add_argument("--output", type=Path, default=RESULTS / "replicas.json")
    parser.add_argument("--plot", action="store_true", help="write a PNG next to the JSON (matplotlib)")
    args = parser.parse_args()
    if args.quick:
        args.pairs, args.sizes = min(args.pairs, 20), [10_000]
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory(prefix="bench-replicas-") as tmp:
        report = asyncio.run(run(args, Path(tmp)))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "propagation"} | {
        "propagation": {k: ({kk: vv for kk, vv in v.items() if kk != "delays_ms"} if isinstance(v, dict) else v)
                        for k, v in report["propagation"].items() if k != "rows"}}, indent=2))
    print(table(report))
    print(f"JSON written to {args.output}", file=sys.stderr)
    if args.plot:
        plot(report, args.output.with_suffix(".png"))


if __name__ == "__main__":
    main()
