"""Five short demos of enhanced-llm, runnable offline.

    python examples/enhanced_llm_usage.py            # embedded random-weight model (meaningless text)
    python examples/enhanced_llm_usage.py --quick    # fewer tokens and requests
    python examples/enhanced_llm_usage.py --model Qwen/Qwen2.5-0.5B-Instruct

1. basic generation          - add_request_v2 and streaming outputs
2. cache                     - a repeated request is answered from the cache (and a paraphrase,
                               with the semantic cache on); the speed-up
3. NLP analysis              - language, connectives and clauses of complex questions
4. concurrent batch          - many requests at once, then the same batch again from the cache
5. health check              - real probes of engine, cache levels, vector index and NLP

The embedded model's weights are random, so its text is gibberish; timings, cache
behaviour and the NLP analysis (done on the prompt) are real.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import time
import unicodedata
import uuid
from collections.abc import Sequence
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


# -- output helpers -------------------------------------------------------------------------------


def _width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _clip(value: Any, limit: int = 48) -> str:
    text = "-" if value is None else str(value)
    text = "".join(c if c.isprintable() else " " for c in text)
    while _width(text) > limit:
        text = text[:-2] + "…"
    return text


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Print an aligned text table (CJK-aware widths)."""
    cells = [[_clip(h) for h in headers]] + [[_clip(v) for v in row] for row in rows]
    widths = [max(_width(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: list[str]) -> str:
        return " | ".join(cell + " " * (w - _width(cell)) for cell, w in zip(row, widths))

    print(line(cells[0]))
    print("-+-".join("-" * w for w in widths))
    for row in cells[1:]:
        print(line(row))


def title(text: str) -> None:
    print(f"\n=== {text} " + "=" * max(0, 70 - len(text)))


def ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f}"


# -- running one request ---------------------------------------------------------------------------


async def ask(handler: Any, prompt: str, params: Any, **options: Any) -> dict[str, Any]:
    """Send one request through add_request_v2 and time it (TTFT and total)."""
    t0 = time.perf_counter()
    first = None
    final = None
    collector = await handler.add_request_v2(prompt, params, **options)
    async for output in collector.get_outputs():
        if first is None:
            first = time.perf_counter() - t0
        if output.error or output.finished:
            final = output
            break
    assert final is not None
    tokens = len(final.outputs[0].token_ids) if final.outputs else 0
    return {"prompt": prompt, "output": final, "ttft": first, "total": time.perf_counter() - t0, "tokens": tokens}


# -- the demos -------------------------------------------------------------------------------------


async def demo_basic(handler: Any, params: Any) -> None:
    title("1. Basic generation (add_request_v2 + streaming)")
    prompts = ["What is artificial intelligence?", "什么是人工智能？", "Write a haiku about the sea."]
    rows = []
    for prompt in prompts:
        r = await ask(handler, _unique(prompt), params)
        out = r["output"]
        rows.append([prompt, r["tokens"], ms(r["ttft"]), ms(r["total"]), out.metadata.get("cache_hit"), out.error or out.text])
    table(["prompt", "tokens", "TTFT ms", "total ms", "cache hit", "text"], rows)


async def demo_cache(handler: Any, params: Any, semantic: bool) -> None:
    title("2. Cache: repeat (exact) and paraphrase (semantic)")
    question = _unique("How do I reset my router password?")
    chinese = _unique("什么是人工智能？")  # the design documents' own example question
    steps = [("first request", question), ("same request again", question), ("same again", question)]
    if semantic:
        steps += [
            ("paraphrase", question.replace("How do I reset", "How can I reset")),
            ("中文 question (demo 1)", chinese),
            ("中文 paraphrase", _unique("人工智能是什么？")),
            ("中文 other question", _unique("什么是机器学习？")),
        ]
    rows, times = [], {}
    for label, prompt in steps:
        if semantic and label in ("paraphrase", "中文 paraphrase"):
            await handler.llm.flush_cache_writes()
            await asyncio.sleep(1.0)  # let the new entry reach the vector index (added in the background)
        r = await ask(handler, prompt, params)
        meta = r["output"].metadata
        times.setdefault(label, r["total"])
        similarity = meta.get("similarity")
        rows.append([
            label, meta.get("cache_hit"), meta.get("cache_source"), meta.get("cache_level"),
            "-" if similarity is None else f"{similarity:.3f}", ms(r["total"]), meta.get("cache_status"),
        ])
    table(["request", "hit", "source", "level", "similarity", "time ms", "cache status"], rows)
    miss, hit = times["first request"], times["same request again"]
    print(f"exact hit: {ms(hit)} ms vs {ms(miss)} ms generated -> {miss / max(hit, 1e-9):.0f}x faster, "
          f"{100 * (1 - hit / miss):.1f}% time saved")


async def demo_nlp(handler: Any, params: Any) -> None:
    title("3. NLP analysis of complex questions")
    questions = [
        "What is machine learning, and how does it differ from deep learning? Also, why is it useful?",
        "什么是机器学习？它和深度学习有什么区别，而且为什么有用？",
    ]
    for question in questions:
        r = await ask(handler, _unique(question, suffix=False), params)
        nlp = r["output"].metadata.get("nlp_result")
        source = "request metadata"
        if not nlp and handler.llm.nlp_analyzer is not None:
            nlp = (await handler.llm.nlp_analyzer.analyze(question)).to_dict()
            source = "analyzer (direct)"
        if not nlp:
            print("NLP analysis is off (start without --no-nlp)")
            return
        print(f"\nQ: {question}")
        print(f"language={nlp['language']}  complex={nlp['is_complex']}  pipeline={nlp['pipeline']}  "
              f"{nlp['elapsed_ms']:.1f} ms  (from {source})")
        connectives = ", ".join(f"{c['text']} ({c['function']})" for c in nlp["connectives"]) or "-"
        print(f"connectives: {connectives}")
        table(["#", "clause", "standalone"], [[i + 1, c["text"], c.get("standalone")] for i, c in enumerate(nlp["clauses"])])


async def demo_batch(handler: Any, params: Any, size: int) -> None:
    title(f"4. Concurrent batch: {size} requests at once, then the same batch again")
    prompts = [_unique(f"Question {i}: explain topic number {i}") for i in range(size)]
    rows = []
    for label in ("generated", "repeated (cache)"):
        t0 = time.perf_counter()
        results = await asyncio.gather(*(ask(handler, p, params) for p in prompts))
        wall = time.perf_counter() - t0
        latencies = sorted(r["total"] for r in results)
        hits = sum(bool(r["output"].metadata.get("cache_hit")) for r in results)
        tokens = sum(r["tokens"] for r in results)
        rows.append([
            label, size, f"{wall:.2f}", f"{size / wall:.1f}", f"{tokens / wall:.0f}",
            ms(statistics.median(latencies)), ms(latencies[-1]), f"{hits}/{size}",
        ])
    table(["batch", "requests", "wall s", "req/s", "tok/s", "p50 ms", "max ms", "cache hits"], rows)


async def demo_health(handler: Any) -> None:
    title("5. Health check and statistics")
    health = await handler.health_check()
    rows = []
    for name, info in health["components"].items():
        if name == "cache":
            rows += [[f"cache.{level}", v.get("status"), _details(v)] for level, v in info.items()]
        else:
            rows.append([name, info.get("status"), _details(info)])
    table(["component", "status", "details"], rows)
    print(f"overall: {health['status']}")
    stats = handler.get_stats()
    cache = stats["cache"] or {}
    table(
        ["total requests", "active", "engine running", "cache hit rate", "time saved s", "nlp analyses"],
        [[stats["total_requests"], stats["active_requests"], stats["llm_running"],
          f"{cache.get('hit_rate', 0):.2f}", f"{cache.get('time_saved_s', 0):.2f}", (stats["nlp"] or {}).get("analyses", "-")]],
    )


def _details(info: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in info.items() if k != "status" and not isinstance(v, dict)) or "-"


def _unique(text: str, suffix: bool = True) -> str:
    """Demo runs start cold: a run id keeps earlier runs' Redis entries from answering."""
    return f"{text} [{RUN_ID}]" if suffix else text


RUN_ID = uuid.uuid4().hex[:6]


# -- main ------------------------------------------------------------------------------------------


def redis_reachable(host: str = "127.0.0.1", port: int = 6379) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="embedded:tiny", help="HF model name or path (default: embedded:tiny)")
    parser.add_argument("--quick", action="store_true", help="fewer tokens and requests")
    parser.add_argument("--max-tokens", type=int, default=None, help="tokens per answer (default 32, quick 12)")
    parser.add_argument("--batch", type=int, default=None, help="requests in the batch demo (default 16, quick 8)")
    parser.add_argument("--no-semantic", action="store_true", help="skip the semantic cache (no embedding model)")
    parser.add_argument("--no-nlp", action="store_true", help="switch NLP analysis off")
    parser.add_argument("--no-redis", action="store_true", help="memory cache only")
    parser.add_argument("--kv-cache-gib", type=float, default=None, help="KV cache size on the CPU")
    parser.add_argument("--verbose", action="store_true", help="keep vLLM's INFO logs")
    return parser.parse_args(argv)


async def run(args: argparse.Namespace) -> None:
    from vllm import SamplingParams

    from enhanced_llm import CacheConfig, CacheType, HandlerConfig, SimilarityConfig, VLLMConfig
    from enhanced_llm.factory import create_enhanced_system, get_global_factory

    max_tokens = args.max_tokens or (12 if args.quick else 32)
    batch = args.batch or (8 if args.quick else 16)
    use_redis = not args.no_redis and redis_reachable()
    engine_args: dict[str, Any] = {}
    if args.kv_cache_gib:
        engine_args["kv_cache_memory_bytes"] = int(args.kv_cache_gib * (1 << 30))
    if args.model.startswith("embedded:"):
        engine_args.setdefault("max_model_len", 1024)

    vllm_config = VLLMConfig.for_model(args.model, **engine_args)
    cache_config = CacheConfig(cache_type=CacheType.MULTI if use_redis else CacheType.MEMORY, key_prefix="demo", ttl=600)
    handler_config = HandlerConfig()
    handler_config.features.enable_nlp_enhancement = not args.no_nlp
    handler_config.features.enable_similarity_search = not args.no_semantic
    params = SamplingParams(temperature=0.0, max_tokens=max_tokens)

    print(f"model={args.model}  cache={cache_config.cache_type.value}  semantic={not args.no_semantic}  "
          f"nlp={not args.no_nlp}  max_tokens={max_tokens}  batch={batch}")
    t0 = time.perf_counter()
    # A semantic lookup costs one MiniLM encode (20-35 ms on a busy 2-core CPU): give it room.
    similarity_config = SimilarityConfig(lookup_timeout=0.25)
    handler = await create_enhanced_system(vllm_config, cache_config, similarity_config, handler_config)
    try:
        await handler.start()
        print(f"engine and components ready in {time.perf_counter() - t0:.1f} s")
        await demo_basic(handler, params)
        await demo_cache(handler, params, semantic=not args.no_semantic)
        await demo_nlp(handler, params)
        await demo_batch(handler, params, batch)
        await demo_health(handler)
    finally:
        await handler.stop()
        await get_global_factory().cleanup_all()
    print("\ndone")


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if not args.verbose:
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
