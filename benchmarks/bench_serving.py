"""Serving throughput: plain ``vllm serve`` vs ``enhanced-llm serve``, with vLLM's own load generator.

Both servers run the ``bench`` embedded model with the same vLLM options, one at a
time, for ``--rounds`` rounds whose order alternates (plain first, then enhanced
first, ...), so that whatever the machine does over time hits both alike; the
ratios are medians of the per-round ratios. Against each, ``vllm.benchmarks.serve`` (the code behind
``vllm bench serve``, whose console command does not run with the CPU build) sends
the same workloads through ``/v1/completions``, greedy, ``ignore_eos``:

* ``repeats_0``:  every prompt distinct;
* ``repeats_50``: half the prompts repeat a prompt sent at least ``--max-concurrency``
  requests earlier (so it has usually finished), interleaved with new ones;
* ``zipf``: ``--zipf-requests`` requests drawn from ``--zipf-distinct`` prompts with Zipf
  popularity (rank ``k`` drawn with probability proportional to ``1 / k**s``, ``s`` = 1.0), the
  shape of real traffic where a few questions are asked very often.

``--plot FILE.png`` (matplotlib) draws the throughput ratios per round and workload and the
TTFT distributions of both servers.

Each workload is a vLLM ``sharegpt`` dataset file (first turn = prompt, ``--disable-shuffle``;
the ``custom`` JSONL dataset would need pandas, which vLLM does not install);
each server gets fresh prompts (a per-run salt), so nothing is cached across runs.
Prints JSON: request throughput, output-token throughput, TTFT p50/p99 and the
enhanced/plain ratios. The machine may be shared: compare ratios, not absolutes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from enhanced_llm.models import resolve_model
from _procs import free_port, stop_process

SERVED_NAME = "embedded:bench"
WORDS = (
    "cache model token request server latency memory vector answer question python data "
    "system network engine query result index graph stream batch tensor layer weight"
).split()


def make_prompts(n: int, repeat_share: float, min_gap: int, salt: str, words: int) -> list[str]:
    """``n`` prompts of which ``repeat_share`` repeat one sent at least ``min_gap`` positions earlier."""
    rng = random.Random(f"{salt}-{repeat_share}")
    prompts: list[str] = []
    repeats_left = round(n * repeat_share)
    for i in range(n):
        can_repeat = i >= min_gap and repeats_left > 0
        # spread the repeats evenly over the positions that allow one
        if can_repeat and rng.random() < repeats_left / max(1, n - i):
            prompts.append(prompts[rng.randrange(0, i - min_gap + 1)])
            repeats_left -= 1
        else:
            body = " ".join(rng.choice(WORDS) for _ in range(words))
            prompts.append(f"[{salt}-{i}] {body}")
    return prompts


def make_zipf_prompts(requests: int, distinct: int, s: float, salt: str, words: int) -> list[str]:
    """``requests`` prompts drawn from ``distinct`` ones with Zipf(``s``) popularity, in random order."""
    rng = random.Random(f"{salt}-zipf")
    population = [f"[{salt}-z{i}] " + " ".join(rng.choice(WORDS) for _ in range(words)) for i in range(distinct)]
    weights = [1 / (rank + 1) ** s for rank in range(distinct)]
    return rng.choices(population, weights=weights, k=requests)


def write_dataset(prompts: list[str], directory: Path, name: str) -> Path:
    """ShareGPT format (the ``custom`` JSONL dataset needs pandas, which vLLM does not install)."""
    path = directory / f"{name}.json"
    rows = [{"conversations": [{"from": "human", "value": p}, {"from": "gpt", "value": "an answer"}]} for p in prompts]
    path.write_text(json.dumps(rows))
    return path


class ServerProcess:
    """One server subprocess, stopped with SIGTERM (then SIGKILL of its process group)."""

    def __init__(self, cmd: list[str], port: int, log: Path) -> None:
        self.port, self.log = port, log
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def wait_healthy(self, timeout: float) -> float:
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited ({self.proc.returncode}):\n{self.log.read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=2).status_code == 200:
                    return time.monotonic() - started
            time.sleep(0.5)
        raise RuntimeError(f"server not healthy after {timeout}s:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        stop_process(self.proc)


def warm_up(port: int, output_len: int, count: int = 8) -> None:
    """A few distinct requests (never repeated later) so both servers start measured runs warm."""
    for i in range(count):
        httpx.post(
            f"http://127.0.0.1:{port}/v1/completions",
            json={"model": SERVED_NAME, "prompt": f"warm-up {uuid.uuid4().hex} {i}", "max_tokens": output_len,
                  "temperature": 0, "ignore_eos": True},
            timeout=300,
        ).raise_for_status()


def run_load(port: int, tokenizer: str, dataset: Path, args: argparse.Namespace) -> dict[str, Any]:
    """``vllm bench serve`` in-process (its parser and ``main``), output redirected to stderr."""
    from vllm.benchmarks import serve as bench_serve
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser()
    bench_serve.add_cli_args(parser)
    bench_args = parser.parse_args([
        "--backend", "openai", "--endpoint", "/v1/completions", "--base-url", f"http://127.0.0.1:{port}",
        "--model", SERVED_NAME, "--tokenizer", tokenizer,
        "--dataset-name", "sharegpt", "--dataset-path", str(dataset), "--disable-shuffle",
        "--sharegpt-output-len", str(args.output_len), "--num-prompts", str(args.num_prompts),
        "--max-concurrency", str(args.max_concurrency), "--request-rate", "inf",
        "--temperature", "0", "--ignore-eos", "--num-warmups", "0", "--disable-tqdm",
        "--percentile-metrics", "ttft,tpot,itl,e2el", "--metric-percentiles", "50,99", "--save-detailed",
    ])
    with contextlib.redirect_stdout(sys.stderr):
        result = bench_serve.main(bench_args)
    keep = ("completed", "failed", "duration", "request_throughput", "output_throughput", "total_token_throughput",
            "p50_ttft_ms", "p99_ttft_ms", "mean_ttft_ms", "p50_tpot_ms", "p50_e2el_ms", "p99_e2el_ms")
    out = {k: round(result[k], 3) if isinstance(result.get(k), float) else result.get(k) for k in keep}
    out["ttfts_ms"] = [round(1000 * t, 2) for t in result.get("ttfts", []) if t]
    return out


def cache_counters(port: int) -> dict[str, float]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("enhanced_llm_cache_") and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name.removeprefix("enhanced_llm_cache_")] = float(value)
    return out


def bench_server(kind: str, model_path: str, workloads: dict[str, list[str]], workdir: Path,
                 args: argparse.Namespace, tag: str) -> dict[str, Any]:
    port = free_port()
    common = ["--host", "127.0.0.1", "--port", str(port), "--served-model-name", SERVED_NAME,
              "--kv-cache-memory-bytes", str(args.kv_cache_bytes), "--max-model-len", "1024",
              "--enforce-eager", "--disable-uvicorn-access-log"]
    prefix = f"bench-serving-{uuid.uuid4().hex[:8]}"
    if kind == "plain":
        cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model_path, *common]
    else:
        cmd = [sys.executable, "-m", "enhanced_llm.cli", "serve", model_path, *common,
               "--cache-type", args.cache_type, "--cache-key-prefix", prefix]
    server = ServerProcess(cmd, port, workdir / f"{kind}.log")
    out: dict[str, Any] = {}
    try:
        out["startup_s"] = round(server.wait_healthy(args.start_timeout), 1)
        warm_up(port, args.output_len)
        for name, prompts in workloads.items():
            salted = [f"{kind} {tag} {p}" for p in prompts]  # fresh prompts per server and round: nothing cached before
            dataset = write_dataset(salted, workdir, f"{kind}-{tag}-{name}")
            print(f"[bench_serving] {tag} {kind} {name} ...", file=sys.stderr, flush=True)
            out[name] = run_load(port, model_path, dataset, args)
            if kind == "enhanced":
                out[name]["cache_after"] = cache_counters(port)
    finally:
        server.stop()
        if kind == "enhanced" and args.cache_type != "memory":
            _delete_keys(prefix)
    return out


def _delete_keys(prefix: str) -> None:
    with contextlib.suppress(Exception):
        import redis

        client = redis.Redis(host="127.0.0.1", port=6379)
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def round_ratios(results: dict[str, dict[str, Any]], workloads: dict[str, list[str]]) -> dict[str, dict[str, float | None]]:
    """Enhanced over plain, per workload, for one round."""
    mine, plain = results["enhanced"], results["plain"]
    return {
        name: {
            "request_throughput": ratio(mine[name]["request_throughput"], plain[name]["request_throughput"]),
            "output_throughput": ratio(mine[name]["output_throughput"], plain[name]["output_throughput"]),
            "p50_ttft": ratio(mine[name]["p50_ttft_ms"], plain[name]["p50_ttft_ms"]),
            "p99_ttft": ratio(mine[name]["p99_ttft_ms"], plain[name]["p99_ttft_ms"]),
        }
        for name in workloads
    }


def median(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return round(statistics.median(known), 3) if known else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-prompts", type=int, default=128)
    parser.add_argument("--output-len", type=int, default=64)
    parser.add_argument("--max-concurrency", type=int, default=16)
    parser.add_argument("--prompt-words", type=int, default=16,
                        help="words per prompt (~4-5 tokens each with the bench tokenizer)")
    parser.add_argument("--cache-type", choices=["memory", "redis", "multi"], default="multi")
    parser.add_argument("--kv-cache-bytes", type=int, default=1 << 30)
    parser.add_argument("--start-timeout", type=float, default=300)
    parser.add_argument("--servers", default="plain,enhanced", help="which servers to run, in the first round's order")
    parser.add_argument("--rounds", type=int, default=2, help="rounds; the order of the servers alternates")
    parser.add_argument("--workloads", default="repeats_0,repeats_50,zipf", help="which workloads to run")
    parser.add_argument("--zipf-requests", type=int, default=2000)
    parser.add_argument("--zipf-distinct", type=int, default=1000)
    parser.add_argument("--zipf-s", type=float, default=1.0)
    parser.add_argument("--output", type=Path, help="also write the JSON report here")
    parser.add_argument("--plot", type=Path, help="write a PNG of the ratios per round and the TTFT distributions")
    args = parser.parse_args()

    model_path = resolve_model(SERVED_NAME)
    salt = uuid.uuid4().hex[:6]
    every = {
        "repeats_0": lambda: make_prompts(args.num_prompts, 0.0, args.max_concurrency, salt, args.prompt_words),
        "repeats_50": lambda: make_prompts(args.num_prompts, 0.5, args.max_concurrency, salt + "r", args.prompt_words),
        "zipf": lambda: make_zipf_prompts(args.zipf_requests, args.zipf_distinct, args.zipf_s, salt, args.prompt_words),
    }
    workloads = {name: every[name]() for name in args.workloads.split(",")}
    report: dict[str, Any] = {
        "model": SERVED_NAME,
        "config": {k: getattr(args, k) for k in (
            "num_prompts", "output_len", "max_concurrency", "prompt_words", "cache_type", "zipf_requests", "zipf_distinct", "zipf_s"
        )},
        "repeat_share_actual": {
            name: round(1 - len(set(p)) / len(p), 3) for name, p in workloads.items()
        },
    }
    kinds = args.servers.split(",")
    rounds: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        for r in range(args.rounds):
            order = kinds if r % 2 == 0 else kinds[::-1]
            results = {kind: bench_server(kind, model_path, workloads, Path(tmp), args, f"r{r}") for kind in order}
            rounds.append({"order": order, **results})
            if "plain" in results and "enhanced" in results:
                rounds[-1]["ratios_enhanced_over_plain"] = round_ratios(results, workloads)
    report["rounds"] = rounds
    per_round = [r["ratios_enhanced_over_plain"] for r in rounds if "ratios_enhanced_over_plain" in r]
    if per_round:
        report["ratios_enhanced_over_plain"] = {
            name: {metric: median([r[name][metric] for r in per_round]) for metric in per_round[0][name]}
            for name in workloads
        }
        medians = report["ratios_enhanced_over_plain"]
        report["targets"] = {
            f"{name}_throughput_ge_{target}": (medians[name]["request_throughput"] or 0) >= target
            for name, target in (("repeats_0", 0.97), ("repeats_50", 1.8)) if name in medians
        }
    text = json.dumps(report, indent=2)
    if args.output:
        args.output.write_text(text + "\n")
    print(text)
    if args.plot:
        plot(report, list(workloads), args.plot)


def plot(report: dict[str, Any], workloads: list[str], path: Path) -> None:
    """Throughput ratio per round and workload; TTFT distribution (CDF) of both servers per workload."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"matplotlib is not installed: no plot written ({path})", file=sys.stderr)
        return
    rounds = [r for r in report["rounds"] if "ratios_enhanced_over_plain" in r]
    fig, axes = plt.subplots(1, 1 + len(workloads), figsize=(5 * (1 + len(workloads)), 4))
    ax = axes[0]
    for name in workloads:
        ax.plot(range(1, len(rounds) + 1), [r["ratios_enhanced_over_plain"][name]["request_throughput"] for r in rounds],
                marker="o", label=name)
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.axhline(0.97, color="red", lw=0.8, ls="--", label="0.97 target (0 % repeats)")
    ax.set(title="requests/s, enhanced / plain, per round", xlabel="round", ylabel="ratio")
    ax.legend(fontsize=8)
    for ax, name in zip(axes[1:], workloads):
        for kind, colour in (("plain", "tab:blue"), ("enhanced", "tab:orange")):
            ttfts = sorted(t for r in report["rounds"] for t in r.get(kind, {}).get(name, {}).get("ttfts_ms", []))
            if ttfts:
                ax.plot(ttfts, [(i + 1) / len(ttfts) for i in range(len(ttfts))], color=colour, label=kind)
        ax.set(title=f"TTFT, {name} (all rounds)", xlabel="ms", ylabel="share of requests", xscale="log")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"plot written to {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
