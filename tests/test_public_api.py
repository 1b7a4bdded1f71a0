"""The public API: exports, configuration validation, the seed-style constructor and clean shutdown."""

from __future__ import annotations

import asyncio
import importlib
import time

import psutil
import pytest
from pydantic import ValidationError

import enhanced_llm
from enhanced_llm import CacheConfig, CacheType, ConfigurationError, HandlerConfig, SimilarityConfig, VLLMConfig


def test_every_exported_name_resolves():
    for name in enhanced_llm.__all__:
        assert getattr(enhanced_llm, name) is not None, name
    assert sorted(dir(enhanced_llm)) == sorted(enhanced_llm.__all__)


def test_errors_share_one_base_class():
    errors = importlib.import_module("enhanced_llm.errors")
    for name in errors.__all__:
        assert issubclass(getattr(errors, name), enhanced_llm.EnhancedLLMError)


@pytest.mark.parametrize(
    "build",
    [
        lambda: CacheConfig(ttl=-1),
        lambda: CacheConfig(redis_port=70000),
        lambda: CacheConfig(redis_url="http://example"),
        lambda: CacheConfig(cache_type="disk"),
        lambda: SimilarityConfig(similarity_threshold=1.01),
        lambda: SimilarityConfig(max_similar_results=-1),
        lambda: HandlerConfig(features={"enable_caching": "maybe"}),
    ],
)
def test_bad_configuration_values_fail_clearly(build):
    with pytest.raises(ValidationError):
        build()


def test_seed_style_mutable_configuration():
    vllm_config = VLLMConfig()
    vllm_config.engine_args.model = "some-org/some-model"
    vllm_config.engine_args.max_model_len = 2048
    handler_config = HandlerConfig(model_name="x", cache_enabled=True, nlp_enabled=True)
    handler_config.features.enable_similarity_search = True
    handler_config.nlp.max_concurrent_tasks = 50
    assert handler_config.nlp_enabled and handler_config.features.enable_caching
    with pytest.raises(ValidationError):
        vllm_config.engine_args.max_model_len = -5
    assert CacheConfig(cache_type=CacheType.REDIS).uses_redis and not CacheConfig().uses_redis


def test_unknown_engine_argument_is_a_configuration_error():
    config = VLLMConfig()
    config.engine_args.not_a_vllm_flag = 1
    with pytest.raises(ConfigurationError, match="not_a_vllm_flag"):
        config.engine_args.to_engine_args()


def test_seed_style_constructor_serves_and_cleans_up():
    """EnhancedAsyncLLM(model=..., handler_config=...) outside any event loop, as the seed README writes it."""
    from vllm import SamplingParams

    from enhanced_llm import EnhancedAsyncLLM

    me = psutil.Process()
    others = {p.pid for p in me.children(recursive=True)}  # engines of other test modules
    llm = EnhancedAsyncLLM(model="embedded:tiny", handler_config=HandlerConfig(cache_enabled=True),
                           engine_args={"kv_cache_memory_bytes": 128 << 20, "max_model_len": 256})
    assert _engine_processes(me, others), "the engine core runs in a child process"

    async def main():
        texts = []
        for _ in range(2):
            collector = await llm.add_request(request_id="my_request_1", prompt="What is AI?",
                                              params=SamplingParams(temperature=0, max_tokens=8))
            async for output in collector.aiter():
                if output.finished:
                    texts.append((output.text, output.metadata["cached"]))
        await llm.cleanup()
        await llm.cleanup()  # idempotent
        return texts

    (first, hit_first), (second, hit_second) = asyncio.run(main())
    assert first == second and not hit_first and hit_second
    deadline = time.monotonic() + 15  # the core's worker is killed a moment after the core
    while _engine_processes(me, others) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _engine_processes(me, others), "engine processes left after cleanup()"


def _engine_processes(me: psutil.Process, others: set[int]) -> list[psutil.Process]:
    """Live children not in ``others``, less Python's multiprocessing resource tracker (it lives as long as we do)."""
    alive = []
    for child in me.children(recursive=True):
        if child.pid in others:
            continue
        try:
            if child.status() != psutil.STATUS_ZOMBIE and "resource_tracker" not in " ".join(child.cmdline()):
                alive.append(child)
        except psutil.Error:
            pass
    return alive
