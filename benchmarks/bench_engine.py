"""Plain AsyncLLM vs EnhancedAsyncLLM, side by side in one run, on the embedded `bench` model.

Prints JSON. Scenarios (``--scenario``):

* ``core``     - exact cache only: throughput ratio and TTFT p50 difference at 0% hits
                 (32 streams), exact-hit latency through generate() for memory (L1) and
                 Redis (L2), time saved against a miss.
* ``semantic`` - similarity search + semantic cache on: throughput ratio at 0% hits and
                 semantic-hit latency through generate() on paraphrases of stored questions.
* ``nlp``      - NLP analysis on: throughput ratio and TTFT p50 difference at 0% hits.
* ``long``     - long context, exact cache on: 16 concurrent distinct prompts of ~1,700
                 tokens, 256 output tokens each, DELTA and CUMULATIVE outputs: throughput
                 ratio per output kind (what recording answers costs inside vLLM's output loop).

Rounds alternate plain / enhanced so that machine noise hits both alike; the
figures are medians over rounds. Targets are printed next to what was measured.

    python benchmarks/bench_engine.py --scenario core semantic nlp
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
import uuid

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DATA = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "gptcache-benchmark", "mock_data.json")


def percentile(values: list[float], p: float) -> float:
    values = sorted(values)
    if not values:
        return float("nan")
    k = (len(values) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def engine_args(model: str):
    from enhanced_llm.config import EngineArgsConfig

    # 2048 tokens of context for the long scenario (16 x ~1,956 tokens fit the 1.5 GiB of KV cache).
    return EngineArgsConfig(model=model, kv_cache_memory_bytes=3 << 29, max_model_len=2048, max_num_seqs=64).to_engine_args()


async def one_request(llm, prompt: str, params) -> tuple[float, float, int, dict]:
    """(ttft, latency, output tokens, metadata) of one generate() call."""
    start = time.perf_counter()
    ttft, tokens, meta = None, 0, {}
    async for out in llm.generate(prompt, params, uuid.uuid4().hex):
        if ttft is None:
            ttft = time.perf_counter() - start
        tokens = sum(len(c.token_ids) for c in out.outputs)
        meta = getattr(out, "metadata", {})
    return ttft or 0.0, time.perf_counter() - start, tokens, meta


async def load_round(llm, streams: int, max_tokens: int, label: str) -> dict:
    """`streams` concurrent unique prompts (0% hits): output tokens/s and TTFTs."""
    from vllm import SamplingParams

    params = SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True)
    prompts = [f"{label} question {uuid.uuid4().hex[:12]}: explain the topic number {i} in detail" for i in range(streams)]
    start = time.perf_counter()
    results = await asyncio.gather(*[one_request(llm, p, params) for p in prompts])
    wall = time.perf_counter() - start
    assert not any(m.get("cache_hit") for *_, m in results), "a 0%-hit round hit the cache"
    return {"tok_s": sum(r[2] for r in results) / wall, "ttfts": [r[0] for r in results]}


async def compare_load(plain, enhanced, rounds: int, streams: int, max_tokens: int) -> dict:
    await load_round(plain, 4, 8, "warmup")
    await load_round(enhanced, 4, 8, "warmup")
    plain_tok, mine_tok, plain_ttft, mine_ttft = [], [], [], []
    for r in range(rounds):
        for llm, tok, ttft in ((plain, plain_tok, plain_ttft), (enhanced, mine_tok, mine_ttft)):
            res = await load_round(llm, streams, max_tokens, f"round{r}")
            tok.append(res["tok_s"])
            ttft.extend(res["ttfts"])
    ratios = [m / p for m, p in zip(mine_tok, plain_tok)]
    return {
        "streams": streams, "max_tokens": max_tokens, "rounds": rounds,
        "plain_tok_s": round(statistics.median(plain_tok), 1),
        "enhanced_tok_s": round(statistics.median(mine_tok), 1),
        "throughput_ratio": round(statistics.median(ratios), 4),
        "throughput_ratios_per_round": [round(x, 4) for x in ratios],
        "ttft_p50_plain_ms": round(1000 * percentile(plain_ttft, 50), 2),
        "ttft_p50_enhanced_ms": round(1000 * percentile(mine_ttft, 50), 2),
        "ttft_p50_overhead_ms": round(1000 * (percentile(mine_ttft, 50) - percentile(plain_ttft, 50)), 2),
    }


def long_prompts(llm, count: int, tokens: int, label: str) -> list[str]:
    """``count`` distinct prompts of about ``tokens`` tokens (distinct from their first word on,
    so that no request reuses another's prefix cache)."""
    words = "the engine records every answer while many requests stream their long outputs".split()
    tokenizer = llm.tokenizer
    prompts = []
    for i in range(count):
        text, n = f"{label} {uuid.uuid4().hex} document {i}:", 0
        while n < tokens:
            text += " " + " ".join(words[(n + j) % len(words)] for j in range(64))
            n = len(tokenizer.encode(text))
        prompts.append(text)
    return prompts


async def long_round(llm, prompts: list[str], kind, max_tokens: int) -> float:
    """Output tokens/s of ``prompts`` run concurrently, read as a client of ``kind`` would."""
    from vllm import SamplingParams

    params = SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True, output_kind=kind)
    start = time.perf_counter()
    results = await asyncio.gather(*[one_request(llm, p, params) for p in prompts])
    wall = time.perf_counter() - start
    assert not any(m.get("cache_hit") for *_, m in results), "a long-context round hit the cache"
    outputs = sum(r[2] for r in results) if kind.name != "DELTA" else len(prompts) * max_tokens
    return outputs / wall


async def compare_long(plain, enhanced, rounds: int, streams: int = 16, prompt_tokens: int = 1700, max_tokens: int = 256) -> dict:
    from vllm.sampling_params import RequestOutputKind

    result: dict = {"streams": streams, "prompt_tokens": prompt_tokens, "max_tokens": max_tokens, "rounds": rounds}
    await long_round(plain, long_prompts(plain, 2, 200, "warmup"), RequestOutputKind.DELTA, 8)
    await long_round(enhanced, long_prompts(plain, 2, 200, "warmup"), RequestOutputKind.DELTA, 8)
    for kind in (RequestOutputKind.DELTA, RequestOutputKind.CUMULATIVE):
        ratios = []
        for r in range(rounds):
            order = (plain, enhanced) if r % 2 == 0 else (enhanced, plain)  # alternate who goes first
            speed = {}
            for llm in order:
                speed[id(llm)] = await long_round(llm, long_prompts(plain, streams, prompt_tokens, f"long{r}"), kind, max_tokens)
            ratios.append(speed[id(enhanced)] / speed[id(plain)])
        result[kind.name.lower()] = {
            "throughput_ratio": round(statistics.median(ratios), 4),
            "throughput_ratios_per_round": [round(x, 4) for x in ratios],
        }
    return result


async def single_ttft(plain, enhanced, n: int) -> dict:
    """TTFT of one request at a time (unique prompts, 0% hits), alternating engines: the added latency itself,
    without the queueing noise of the 32-stream rounds."""
    from vllm import SamplingParams

    params = SamplingParams(temperature=0.0, max_tokens=4, ignore_eos=True)
    plain_ttft, mine_ttft = [], []
    for i in range(n):
        for llm, out in ((plain, plain_ttft), (enhanced, mine_ttft)):
            ttft, *_ = await one_request(llm, f"single {i} {uuid.uuid4().hex[:12]}: explain the topic in detail", params)
            out.append(ttft)
    return {
        "samples": n,
        "ttft_p50_plain_ms": round(1000 * percentile(plain_ttft, 50), 3),
        "ttft_p50_enhanced_ms": round(1000 * percentile(mine_ttft, 50), 3),
        "ttft_p50_overhead_ms": round(1000 * (percentile(mine_ttft, 50) - percentile(plain_ttft, 50)), 3),
        "ttft_p99_overhead_ms": round(1000 * (percentile(mine_ttft, 99) - percentile(plain_ttft, 99)), 3),
    }


async def exact_hits(enhanced, n: int, max_tokens: int) -> dict:
    from vllm import SamplingParams

    params = SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True)
    prompt = f"exact-hit benchmark {uuid.uuid4().hex}"
    _, miss_latency, _, _ = await one_request(enhanced, prompt, params)
    await enhanced.flush_cache_writes()
    l1, l2 = [], []
    for _ in range(n):
        _, lat, _, meta = await one_request(enhanced, prompt, params)
        assert meta["cache_level"] == "memory"
        l1.append(lat)
    for _ in range(n):
        enhanced.cache_manager.clear_memory()
        _, lat, _, meta = await one_request(enhanced, prompt, params)
        assert meta["cache_level"] == "redis"
        l2.append(lat)
    return {
        "miss_latency_ms": round(1000 * miss_latency, 2), "max_tokens": max_tokens, "samples": n,
        "l1_hit_p50_ms": round(1000 * percentile(l1, 50), 4), "l1_hit_p99_ms": round(1000 * percentile(l1, 99), 4),
        "l2_hit_p50_ms": round(1000 * percentile(l2, 50), 4), "l2_hit_p99_ms": round(1000 * percentile(l2, 99), 4),
        "time_saved_l1": round(1 - percentile(l1, 50) / miss_latency, 5),
        "time_saved_l2": round(1 - percentile(l2, 50) / miss_latency, 5),
        "samples_ms": {"memory (L1)": [round(1000 * x, 4) for x in l1], "redis (L2)": [round(1000 * x, 4) for x in l2]},
    }


ZH_PAIRS = os.path.join(os.path.dirname(__file__), "data", "semantic_eval_zh.json")


def chinese_pairs(count: int) -> list[dict]:
    """Chinese paraphrase pairs (the tuning part of the gold set), as {origin, similar}."""
    with open(ZH_PAIRS) as f:
        spec = json.load(f)["pairs"]
    return [{"origin": p["a"], "similar": p["b"]} for p in spec if p["label"] == "same" and p["split"] == "tuning"][:count]


async def semantic_hits(enhanced, pairs: int, max_tokens: int, data: list[dict] | None = None) -> dict:
    from vllm import SamplingParams

    params = SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True)
    if data is None:
        with open(DATA) as f:
            data = json.load(f)[:pairs]
    misses = await asyncio.gather(*[one_request(enhanced, d["origin"], params) for d in data])
    await asyncio.sleep(1.0)
    await enhanced.flush_cache_writes()
    single_miss = await one_request(enhanced, f"single miss {uuid.uuid4().hex}", params)
    latencies, hits = [], 0
    for d in data:
        _, lat, _, meta = await one_request(enhanced, d["similar"], params)
        if meta.get("cache_source") == "semantic":
            hits += 1
            latencies.append(lat)
    return {
        "stored": len(misses), "queries": len(data), "semantic_hits": hits, "max_tokens": max_tokens,
        "miss_latency_ms": round(1000 * single_miss[1], 2),
        "semantic_hit_p50_ms": round(1000 * percentile(latencies, 50), 3),
        "semantic_hit_p99_ms": round(1000 * percentile(latencies, 99), 3),
        "time_saved": round(1 - percentile(latencies, 50) / single_miss[1], 4) if latencies else None,
        "samples_ms": {"semantic": [round(1000 * x, 3) for x in latencies]},
    }


def build_enhanced(model: str, scenario: str):
    from enhanced_llm import CacheConfig, CacheType, EnhancedAsyncLLM, HandlerConfig

    handler = HandlerConfig()
    handler.features.enable_similarity_search = scenario == "semantic"
    handler.features.enable_nlp_enhancement = scenario == "nlp"
    cache = CacheConfig(cache_type=CacheType.MULTI, key_prefix=f"bench-{uuid.uuid4().hex[:8]}")
    return EnhancedAsyncLLM.from_engine_args(engine_args(model), cache_config=cache, handler_config=handler)


async def main(args) -> dict:
    from vllm.v1.engine.async_llm import AsyncLLM

    from enhanced_llm.models import build_model

    model = str(build_model(args.model))
    plain = AsyncLLM.from_engine_args(engine_args(model))
    report: dict = {"model": args.model, "cpu_count": os.cpu_count(), "scenarios": {}}
    try:
        for scenario in args.scenario:
            enhanced = build_enhanced(model, scenario)
            try:
                await enhanced.start_enhancements()
                if scenario == "long":
                    result = {"long_context": await compare_long(plain, enhanced, args.rounds)}
                    result["targets"] = targets(scenario, result)
                    report["scenarios"][scenario] = result
                    continue
                result = {
                    "load_0pct_hits": await compare_load(plain, enhanced, args.rounds, args.streams, args.max_tokens),
                    "single_request_ttft": await single_ttft(plain, enhanced, args.single),
                }
                if scenario == "core":
                    result["exact_hits"] = await exact_hits(enhanced, args.samples, args.max_tokens)
                if scenario == "semantic":
                    result["semantic_hits"] = await semantic_hits(enhanced, args.pairs, args.max_tokens)
                    result["semantic_hits_zh"] = await semantic_hits(
                        enhanced, args.pairs, args.max_tokens, chinese_pairs(args.pairs)
                    )
                    result["semantic_stats"] = {
                        k: v for k, v in enhanced.similarity_helper.stats().items() if k in ("rejections", "timeouts", "embedder")
                    }
                if scenario == "nlp":
                    result["nlp_stats"] = enhanced.nlp_analyzer.stats()
                result["targets"] = targets(scenario, result)
                report["scenarios"][scenario] = result
            finally:
                await enhanced.cleanup()
    finally:
        plain.shutdown()
    report["load_average"] = os.getloadavg()
    return report


def targets(scenario: str, r: dict) -> dict:
    if scenario == "long":
        long = r["long_context"]
        return {f"throughput_ratio>=0.97 ({kind})": long[kind]["throughput_ratio"] >= 0.97 for kind in ("delta", "cumulative")}
    load = r["load_0pct_hits"]
    t = {"throughput_ratio>=0.97": load["throughput_ratio"] >= 0.97}
    if scenario in ("core", "nlp", "semantic"):
        t["ttft_p50_overhead<=2ms (single request)"] = r["single_request_ttft"]["ttft_p50_overhead_ms"] <= 2.0
        t["ttft_p50_overhead<=2ms (32 streams)"] = load["ttft_p50_overhead_ms"] <= 2.0
    if scenario == "core":
        e = r["exact_hits"]
        t["l1_hit_p50<=0.25ms"] = e["l1_hit_p50_ms"] <= 0.25
        t["l2_hit_p50<=0.6ms"] = e["l2_hit_p50_ms"] <= 0.6
        t["time_saved>=99.5%"] = min(e["time_saved_l1"], e["time_saved_l2"]) >= 0.995
    if scenario == "semantic":
        s = r["semantic_hits"]
        t["semantic_hit_p50<=15ms"] = s["semantic_hit_p50_ms"] <= 15
        t["semantic_hit_p50<=15ms (Chinese)"] = r["semantic_hits_zh"]["semantic_hit_p50_ms"] <= 15
        t["time_saved>=90%"] = (s["time_saved"] or 0) >= 0.90
    return t


def plot(report: dict, path: str) -> None:
    """Hit latency by level (box plot, log scale) and throughput ratio per round and scenario."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"matplotlib is not installed: no plot written ({path})", file=sys.stderr)
        return
    samples: dict[str, list[float]] = {}
    ratios: dict[str, list[float]] = {}
    for name, scenario in report["scenarios"].items():
        for part in ("exact_hits", "semantic_hits", "semantic_hits_zh"):
            for level, values in scenario.get(part, {}).get("samples_ms", {}).items():
                samples[level + (" (zh)" if part.endswith("_zh") else "")] = values
        if "load_0pct_hits" in scenario:
            ratios[name] = scenario["load_0pct_hits"]["throughput_ratios_per_round"]
        for kind in ("delta", "cumulative"):
            if kind in scenario.get("long_context", {}):
                ratios[f"long {kind}"] = scenario["long_context"][kind]["throughput_ratios_per_round"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    if samples:
        left.boxplot(list(samples.values()), tick_labels=list(samples), showfliers=False)
        left.set(yscale="log", ylabel="ms through generate()", title="cache hit latency by level")
    for name, values in ratios.items():
        right.plot(range(1, len(values) + 1), values, marker="o", label=name)
    right.axhline(0.97, color="red", lw=0.8, ls="--", label="0.97 target")
    right.set(title="throughput, enhanced / plain, per round (0 % hits)", xlabel="round", ylabel="ratio")
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenario", nargs="+", choices=["core", "semantic", "nlp", "long"], default=["core"])
    p.add_argument("--model", default="bench", help="embedded preset (tiny, bench)")
    p.add_argument("--streams", type=int, default=32)
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--samples", type=int, default=200, help="exact-hit samples per level")
    p.add_argument("--pairs", type=int, default=40, help="mock_data pairs for semantic hits")
    p.add_argument("--single", type=int, default=40, help="alternating single-request TTFT samples per engine")
    p.add_argument("--output", help="also write the JSON report to this file (vLLM logs share stdout)")
    p.add_argument("--plot", help="write a PNG: hit latency by level, throughput ratios per round")
    return p.parse_args(argv)


if __name__ == "__main__":
    args = parse(sys.argv[1:])
    result = asyncio.run(main(args))
    report = json.dumps(result, indent=2)
    if args.output:
        with open(args.output, "w") as f:
            f.write(report + "\n")
    print(report)
    if args.plot:
        plot(result, args.plot)
