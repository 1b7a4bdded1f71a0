"""CY-LLM's worker view of the engine: ``create_engine`` -> ``load_model`` -> ``infer`` chunks -> ``unload_model``.

Run: ``.venv/bin/python examples/cyllm_engine.py [MODEL] [--engine TYPE]``
(default ``embedded:tiny``, a random-weight model: its text is meaningless).

The engine type comes from ``--engine``, else ``$CY_LLM_ENGINE`` (CY-LLM's variable), else
the default ``enhanced-vllm-async``; ``cuda-vllm-async`` / ``cuda-vllm`` work as before.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import time

from enhanced_llm.cyllm import EngineFactory, create_engine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?", default="embedded:tiny")
    parser.add_argument("--engine", default=None, help=f"one of {', '.join(EngineFactory.available())}")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    args = parser.parse_args()

    engine = create_engine(args.engine, stream_chunk_size=4)
    print(f"engine: {type(engine).__name__}")
    started = time.perf_counter()
    engine.load_model(args.model, max_model_len=512)  # on a CPU: 1 GiB KV cache unless kv_cache_memory_bytes is given
    print(f"loaded {args.model} in {time.perf_counter() - started:.1f}s")
    try:
        prompt = "Tell me a short story about a cache."
        for attempt in ("first", "again"):
            started = time.perf_counter()
            chunks, first_at = [], None
            for chunk in engine.infer(prompt, max_new_tokens=args.max_new_tokens, temperature=0.0):
                first_at = first_at if first_at is not None else time.perf_counter() - started
                chunks.append(chunk)  # CY-LLM's worker would send each chunk on (gRPC StreamPredictResponse)
            total = time.perf_counter() - started
            print(f"{attempt:>5}: {len(chunks)} chunks, first after {first_at * 1000:.1f} ms, all after {total * 1000:.1f} ms")
        print("answer:", repr("".join(chunks))[:120])

        # closing the generator early aborts the request in the engine
        stream = engine.infer("Count to a thousand.", max_new_tokens=400, temperature=0.0, ignore_eos=True)
        print("first chunk of a long answer:", repr(next(stream)))
        stream.close()

        # the worker's thread pool: concurrent infer() calls are batched by vLLM
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda i: "".join(engine.infer(f"question {i}", max_new_tokens=16)), range(8)))
        print(f"8 concurrent requests answered ({sum(map(len, answers))} characters)")

        usage = engine.get_memory_usage()
        print("memory:", ", ".join(f"{k}={v / 2**20:.3f} MiB" if k.endswith("bytes") else f"{k}={v:g}" for k, v in usage.items()))
    finally:
        engine.unload_model()
    print("unloaded; done")


if __name__ == "__main__":  # vLLM starts its engine core with spawn on the CPU
    main()
