"""Prometheus export of the library's figures, on the server's existing ``/metrics`` next to vLLM's.

:class:`EnhancedLLMCollector` is a custom prometheus_client ``Collector``: it reads
``engine.get_enhanced_stats()`` when ``/metrics`` is scraped, so the request path
pays nothing. vLLM's single API server exposes prometheus_client's default
``REGISTRY`` (``vllm.v1.metrics.prometheus.get_prometheus_registry``), which is where
:func:`register_metrics` registers it. With ``PROMETHEUS_MULTIPROC_DIR`` set, vLLM
serves a registry built from files instead, which a live collector cannot join:
a warning is logged and the figures are not exported.

Families (all prefixed ``enhanced_llm_``):

* counters: ``cache_hits_total{source,level}`` (exact/memory, exact/redis, semantic),
  ``cache_misses_total``, ``cache_coalesced_total``, ``cache_stores_total``,
  ``cache_store_skipped_total``, ``cache_evictions_total``, ``cache_redis_errors_total``,
  ``cache_corrupt_entries_total``, ``cache_bypassed_total``, ``cache_uncacheable_total``,
  ``cache_time_saved_seconds_total``, ``cache_tokens_saved_total``,
  ``semantic_lookups_total``, ``semantic_misses_total``, ``semantic_timeouts_total``,
  ``semantic_rejections_total{reason}``, ``semantic_errors_total{type}``,
  ``nlp_analyses_total``, ``nlp_failures_total``, ``nlp_timeouts_total``, ``nlp_truncated_total``;
* gauges: ``cache_memory_entries``, ``cache_memory_bytes``, ``cache_in_flight``,
  ``cache_hit_ratio``, ``semantic_index_entries``, ``nlp_analysis_milliseconds{quantile}``;
* histogram: ``semantic_best_similarity`` (best candidate's cosine per lookup, 0.05 buckets; no ``_sum``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from typing import Any, Protocol

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

__all__ = ["EnhancedLLMCollector", "register_metrics", "unregister_metrics", "PREFIX"]

logger = logging.getLogger(__name__)

PREFIX = "enhanced_llm_"


class _StatsSource(Protocol):
    def get_enhanced_stats(self) -> dict[str, Any]: ...


# (stats key, metric name without prefix/_total, help)
_CACHE_COUNTERS: tuple[tuple[str, str, str], ...] = (
    ("misses", "cache_misses", "Exact-cache lookups that found nothing."),
    ("coalesced", "cache_coalesced", "Requests answered by an identical in-flight request."),
    ("stores", "cache_stores", "Answers stored in the cache."),
    ("store_skipped", "cache_store_skipped", "Finished requests whose answer was not storable."),
    ("evictions", "cache_evictions", "Entries evicted from the memory level."),
    ("redis_errors", "cache_redis_errors", "Failed or timed-out Redis calls (the request went on)."),
    ("redis_busy", "cache_redis_busy", "Redis calls skipped: no pooled connection was free in time (not a failure)."),
    ("corrupt_entries", "cache_corrupt_entries", "Redis values refused and dropped (corrupt, foreign, unsigned, oversized)."),
    ("bad_signatures", "cache_bad_signatures", "Redis values refused: unsigned or invalid HMAC while signing is on."),
    ("oversized_entries", "cache_oversized_entries", "Redis values over max_value_bytes: refused on read or not written."),
    ("bypassed", "cache_bypassed", "Requests that asked to bypass the cache."),
    ("uncacheable", "cache_uncacheable", "Requests passed straight through (logprobs, key errors ...)."),
    ("time_saved_s", "cache_time_saved_seconds", "Generation time saved by cache answers (seconds)."),
    ("tokens_saved", "cache_tokens_saved", "Output tokens served from the cache instead of generated."),
)
_CACHE_GAUGES: tuple[tuple[str, str, str], ...] = (
    ("memory_entries", "cache_memory_entries", "Entries held in the memory level."),
    ("memory_bytes", "cache_memory_bytes", "Bytes held in the memory level."),
    ("in_flight", "cache_in_flight", "Cacheable requests being generated that others may join."),
    ("hit_rate", "cache_hit_ratio", "Exact hits / exact lookups since start."),
)
_SEMANTIC_COUNTERS: tuple[tuple[str, str, str], ...] = (
    ("lookups", "semantic_lookups", "Semantic-cache lookups."),
    ("misses", "semantic_misses", "Semantic lookups that served nothing."),
    ("timeouts", "semantic_timeouts", "Semantic lookups that ran out of time."),
    ("adds", "semantic_adds", "Questions added to the vector index."),
)
_NLP_COUNTERS: tuple[tuple[str, str, str], ...] = (
    ("analyses", "nlp_analyses", "NLP analyses run."),
    ("failures", "nlp_failures", "NLP analyses that failed."),
    ("timeouts", "nlp_timeouts", "NLP analyses given up after the timeout."),
    ("truncated", "nlp_truncated", "NLP inputs analysed only up to max_chars."),
)


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _counters(stats: Mapping[str, Any], table: tuple[tuple[str, str, str], ...]) -> Iterator[Metric]:
    for key, name, doc in table:
        if (value := _num(stats.get(key))) is not None:
            yield CounterMetricFamily(PREFIX + name, doc, value=value)


def _gauges(stats: Mapping[str, Any], table: tuple[tuple[str, str, str], ...]) -> Iterator[Metric]:
    for key, name, doc in table:
        if (value := _num(stats.get(key))) is not None:
            yield GaugeMetricFamily(PREFIX + name, doc, value=value)


def _labelled_counter(name: str, doc: str, label: str, values: Any) -> Iterator[Metric]:
    if isinstance(values, Mapping) and values:
        family = CounterMetricFamily(PREFIX + name, doc, labels=[label])
        for key, value in sorted(values.items()):
            if (v := _num(value)) is not None:
                family.add_metric([str(key)], v)
        yield family


def _similarity_histogram(buckets: Any) -> Iterator[Metric]:
    """``{"0.85-0.90": n, ...}`` (0.05-wide) -> cumulative ``le`` buckets."""
    if not isinstance(buckets, Mapping) or not buckets:
        return
    per_upper: dict[float, float] = {}
    for label, count in buckets.items():
        try:
            upper = round(float(str(label).split("-")[1]), 2)
        except (IndexError, ValueError):
            continue
        per_upper[upper] = per_upper.get(upper, 0.0) + (_num(count) or 0.0)
    running, cumulative = 0.0, []
    for i in range(1, 21):
        upper = round(i * 0.05, 2)
        running += per_upper.get(upper, 0.0)
        cumulative.append((f"{upper:.2f}", running))
    cumulative.append(("+Inf", running))
    family = HistogramMetricFamily(
        PREFIX + "semantic_best_similarity", "Cosine similarity of the best candidate per semantic lookup.", labels=[]
    )
    family.add_metric([], cumulative, sum_value=None)
    yield family


class EnhancedLLMCollector(Collector):
    """Reads the engine's statistics at scrape time and yields them as metric families."""

    def __init__(self, engine: _StatsSource) -> None:
        self._engine = engine
        self.registry: CollectorRegistry | None = None  # set by register_metrics

    def describe(self) -> list[Metric]:
        return []  # families depend on the enabled features; no registration-time checks

    def collect(self) -> Iterator[Metric]:
        try:
            stats = self._engine.get_enhanced_stats()
        except Exception:  # a scrape must never fail because of us
            logger.exception("reading enhanced stats failed")
            return
        yield from self._cache(stats.get("cache") or {})
        yield from self._semantic(stats.get("semantic") or {})
        yield from self._nlp(stats.get("nlp") or {})

    def _cache(self, cache: Mapping[str, Any]) -> Iterator[Metric]:
        if not cache.get("enabled", True):
            return
        hits = CounterMetricFamily(PREFIX + "cache_hits", "Requests answered from the cache.", labels=["source", "level"])
        for key, source, level in (("hits_memory", "exact", "memory"), ("hits_redis", "exact", "redis")):
            hits.add_metric([source, level], _num(cache.get(key)) or 0.0)
        semantic_hits = _num(cache.get("hits_semantic"))
        hits.add_metric(["semantic", ""], semantic_hits or 0.0)
        yield hits
        yield from _counters(cache, _CACHE_COUNTERS)
        yield from _gauges(cache, _CACHE_GAUGES)

    def _semantic(self, semantic: Mapping[str, Any]) -> Iterator[Metric]:
        if not semantic.get("enabled", True):
            return
        if (hits := _num(semantic.get("semantic_hits"))) is not None:
            yield CounterMetricFamily(PREFIX + "semantic_hits", "Verified paraphrases served by the semantic cache.", value=hits)
        yield from _counters(semantic, _SEMANTIC_COUNTERS)
        yield from _labelled_counter(
            "semantic_rejections", "Semantic candidates rejected, by reason.", "reason", semantic.get("rejections")
        )
        yield from _labelled_counter("semantic_errors", "Semantic-layer failures, by type.", "type", semantic.get("errors"))
        yield from _similarity_histogram(semantic.get("similarity_histogram"))
        index = semantic.get("index")
        if isinstance(index, Mapping) and (entries := _num(index.get("entries"))) is not None:
            yield GaugeMetricFamily(PREFIX + "semantic_index_entries", "Vectors in the semantic index.", value=entries)

    def _nlp(self, nlp: Mapping[str, Any]) -> Iterator[Metric]:
        if not nlp.get("enabled", True):
            return
        yield from _counters(nlp, _NLP_COUNTERS)
        family = GaugeMetricFamily(
            PREFIX + "nlp_analysis_milliseconds", "NLP analysis time over the recent window.", labels=["quantile"]
        )
        for key, quantile in (("p50_ms", "0.5"), ("p99_ms", "0.99")):
            if (value := _num(nlp.get(key))) is not None:
                family.add_metric([quantile], value)
        if family.samples:
            yield family


def register_metrics(engine: _StatsSource, registry: CollectorRegistry | None = None) -> EnhancedLLMCollector | None:
    """Register a collector for ``engine`` on the registry vLLM's ``/metrics`` serves; None if it cannot."""
    if registry is None:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            logger.warning("PROMETHEUS_MULTIPROC_DIR is set: enhanced_llm_* metrics are not exported")
            return None
        registry = REGISTRY
    collector = EnhancedLLMCollector(engine)
    registry.register(collector)
    collector.registry = registry
    return collector


def unregister_metrics(collector: EnhancedLLMCollector) -> None:
    """Undo :func:`register_metrics` (idempotent)."""
    if collector.registry is not None:
        try:
            collector.registry.unregister(collector)
        except KeyError:
            pass
        collector.registry = None
