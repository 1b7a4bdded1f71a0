"""The ``enhanced-llm`` command.

``enhanced-llm serve MODEL [vllm serve options] [enhanced options]`` runs vLLM's
OpenAI-compatible server with :class:`~enhanced_llm.engine.EnhancedAsyncLLM` as the
engine (see :mod:`enhanced_llm.serving`). Every ``vllm serve`` option is parsed by
vLLM's own parser; the enhanced options form their own ``--help`` group
(``enhanced-llm serve --help=EnhancedLLM`` lists them). MODEL is
a Hugging Face name or path, or ``embedded:tiny`` / ``embedded:bench`` (locally
built random-weight test models, served under that name).

Enhanced options override the file given with ``--enhanced-config``, a JSON or
YAML object with any of ``cache_config``, ``similarity_config``, ``handler_config``
(the dicts of :class:`CacheConfig`, :class:`SimilarityConfig`, :class:`HandlerConfig`),
``scope_header`` and ``cache_response_headers``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from .config import EMBEDDED_MODEL_PREFIX, CacheConfig, CacheType, HandlerConfig, SimilarityConfig
from .errors import ConfigurationError

__all__ = ["main", "build_parser", "options_from_args", "load_enhanced_config"]

_FILE_SECTIONS = {
    "cache_config": "cache_config", "cache": "cache_config",
    "similarity_config": "similarity_config", "similarity": "similarity_config",
    "handler_config": "handler_config", "handler": "handler_config",
    "scope_header": "scope_header", "cache_response_headers": "cache_response_headers",
}


_ENHANCED_DESTS = frozenset({
    "enhanced_config", "cache_type", "redis_url", "cache_ttl", "cache_key_prefix", "similarity_threshold",
    "enable_semantic_cache", "enable_nlp", "cache_scope_header", "cache_response_headers", "grpc_port",
    "tenant_keys", "trust_scope_header", "protect_metrics", "cache_signing_key", "redis_max_connections",
})


def add_enhanced_args(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """The enhanced options, in their own group. Options not given are absent from the namespace
    (``argparse.SUPPRESS``), so they leave the config file's value, then the config default."""
    group = parser.add_argument_group(
        "EnhancedLLM", "Response cache, semantic cache and NLP of enhanced-llm (show with --help=EnhancedLLM)."
    )
    group.add_argument("--enhanced-config", metavar="FILE", type=Path, default=argparse.SUPPRESS,
                       help="JSON or YAML file with cache_config / similarity_config / handler_config objects.")
    group.add_argument("--cache-type", choices=[t.value for t in CacheType], default=argparse.SUPPRESS,
                       help="Where exact-cache entries live (default: memory).")
    group.add_argument("--redis-url", default=argparse.SUPPRESS,
                       help="redis://host:port/db for the redis and multi cache types; "
                       "redis+cluster://host:port,host:port for a Redis Cluster.")
    group.add_argument("--redis-max-connections", type=int, default=argparse.SUPPRESS, metavar="N",
                       help="Size of the Redis connection pool (default 64); calls beyond it wait briefly.")
    group.add_argument("--cache-signing-key", default=argparse.SUPPRESS, metavar="KEY",
                       help="HMAC key signing Redis cache values; unsigned or mis-signed values are misses "
                       "(default: $ENHANCED_LLM_CACHE_SIGNING_KEY; the variable keeps the key out of `ps`).")
    group.add_argument("--cache-ttl", type=float, default=argparse.SUPPRESS, metavar="SECONDS",
                       help="Entry lifetime; 0 keeps entries until evicted (default 3600).")
    group.add_argument("--cache-key-prefix", default=argparse.SUPPRESS, help="Namespace of this server's Redis keys (default enhanced_llm).")
    group.add_argument("--similarity-threshold", type=float, default=argparse.SUPPRESS,
                       help="Cosine similarity a paraphrase needs to answer from the semantic cache (default 0.8).")
    group.add_argument("--enable-semantic-cache", action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                       help="Serve verified paraphrases from the cache (needs the 'semantic' extra).")
    group.add_argument("--enable-nlp", action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                       help="Run the asynchronous NLP analysis (needs the 'nlp' extra).")
    group.add_argument("--cache-scope-header", default=argparse.SUPPRESS, metavar="NAME",
                       help="Request header with a client sub-scope within the caller's tenant, or the tenant "
                       "itself with --trust-scope-header (default X-Cache-Scope).")
    group.add_argument("--tenant-keys", metavar="FILE", type=Path, default=argparse.SUPPRESS,
                       help='JSON object: API key -> tenant name, or {"tenant": NAME, "allow_refresh": false, '
                       '"allow_forget": false, "trust_scope_header": true}. A caller\'s tenant is its key\'s.')
    group.add_argument("--trust-scope-header", action="store_true", default=argparse.SUPPRESS,
                       help="The scope header names the tenant (only behind a gateway that sets it and strips "
                       "clients' own). Not with --tenant-keys (mark the gateway's key in the file instead).")
    group.add_argument("--protect-metrics", action="store_true", default=argparse.SUPPRESS,
                       help="With keys configured, /metrics, /load, /version and the API docs need a key too "
                       "(only /health and /ping stay open).")
    group.add_argument("--cache-response-headers", action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                       help="Add X-Cache / X-Cache-Source / X-Cache-Level to generation responses (default on).")
    return group


def _adopt_grpc_port(parser: argparse.ArgumentParser) -> None:
    """vLLM's ``--grpc-port`` (its Rust frontend, which ``enhanced-llm serve`` does not run) serves
    CY-LLM's gRPC ``AIService.StreamPredict`` here; ``main`` takes the value out of vLLM's hands."""
    for action in parser._actions:
        if action.dest == "grpc_port":
            action.help = ("[EnhancedLLM] Also serve CY-LLM's gRPC AIService.StreamPredict on this port (same engine "
                           "and caches as the HTTP routes; binds on --host). Not vLLM's --grpc.")
            action.metavar = "PORT"


def build_parser() -> argparse.ArgumentParser:
    """``enhanced-llm serve``: vLLM's serve parser (``make_arg_parser``) plus the enhanced group."""
    from vllm.entrypoints.launchers.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser(prog="enhanced-llm", description="vLLM with exact and semantic response caching.")
    # dest="subparser" and the name "serve": vLLM's validate_parsed_serve_args checks both.
    subparsers = parser.add_subparsers(dest="subparser", required=True, metavar="{serve}")
    serve = subparsers.add_parser(
        "serve",
        help="Run the OpenAI-compatible server with the enhanced engine.",
        description="vLLM's OpenAI-compatible server with EnhancedAsyncLLM. All `vllm serve` options apply; "
        "the enhanced options are listed by --help=EnhancedLLM.",
        usage="enhanced-llm serve MODEL [vllm serve options] [enhanced options]",
    )
    make_arg_parser(serve)
    add_enhanced_args(serve)
    _adopt_grpc_port(serve)
    return parser


def load_enhanced_config(path: Path) -> dict[str, Any]:
    """Read the ``--enhanced-config`` file (JSON, or YAML by extension or when JSON fails)."""
    text = path.read_text()
    data: Any
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        data = yaml.safe_load(text)
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            import yaml

            data = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise ConfigurationError(f"{path}: expected an object at the top level")
    unknown = sorted(set(data) - set(_FILE_SECTIONS))
    if unknown:
        raise ConfigurationError(f"{path}: unknown section(s) {unknown}; expected {sorted(set(_FILE_SECTIONS))}")
    return {_FILE_SECTIONS[k]: v for k, v in data.items()}


def options_from_args(args: argparse.Namespace) -> Any:
    """Build :class:`~enhanced_llm.serving.ServingOptions` from the file, then the command-line overrides."""
    from .serving import ServingOptions

    given = {k: v for k, v in vars(args).items() if k in _ENHANCED_DESTS}
    file = load_enhanced_config(given["enhanced_config"]) if "enhanced_config" in given else {}
    cache = dict(file.get("cache_config") or {})
    similarity = dict(file.get("similarity_config") or {})
    handler = dict(file.get("handler_config") or {})
    features = dict(handler.pop("features", None) or {})
    if "cache_type" in given:
        cache["cache_type"] = given["cache_type"]
    if "redis_url" in given:
        cache["redis_url"] = given["redis_url"]
    if "redis_max_connections" in given:
        cache["redis_max_connections"] = given["redis_max_connections"]
    if "cache_signing_key" in given:
        cache["signing_key"] = given["cache_signing_key"]
    if "cache_ttl" in given:
        cache["ttl"] = given["cache_ttl"] if given["cache_ttl"] > 0 else None
    if "cache_key_prefix" in given:
        cache["key_prefix"] = given["cache_key_prefix"]
    if "similarity_threshold" in given:
        similarity["similarity_threshold"] = given["similarity_threshold"]
    if "enable_semantic_cache" in given:
        features["enable_similarity_search"] = given["enable_semantic_cache"]
        similarity["enable_semantic_cache"] = given["enable_semantic_cache"]
    if "enable_nlp" in given:
        features["enable_nlp_enhancement"] = given["enable_nlp"]
    tenant_keys = None
    if "tenant_keys" in given:
        from .serving.tenants import load_tenant_keys

        try:
            tenant_keys = load_tenant_keys(given["tenant_keys"])
        except ValueError as exc:
            raise ConfigurationError(f"--tenant-keys: {exc}") from exc
    try:
        return ServingOptions(
            cache_config=CacheConfig(**cache),
            similarity_config=SimilarityConfig(**similarity),
            handler_config=HandlerConfig(**handler, features=features),
            scope_header=given.get("cache_scope_header") or file.get("scope_header") or "X-Cache-Scope",
            cache_response_headers=bool(given.get("cache_response_headers", file.get("cache_response_headers", True))),
            grpc_port=given.get("grpc_port"),
            tenant_keys=tenant_keys,
            trust_scope_header=bool(given.get("trust_scope_header", False)),
            protect_metrics=bool(given.get("protect_metrics", False)),
        )
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        raise ConfigurationError(f"invalid enhanced options: {exc}") from exc


def _resolve_model(args: argparse.Namespace) -> None:
    """As ``vllm serve``: the positional MODEL wins; ``embedded:*`` is built and served under its name."""
    from .models import resolve_model

    if getattr(args, "model_tag", None) is not None:
        args.model = args.model_tag
    if args.model.startswith(EMBEDDED_MODEL_PREFIX):
        if args.served_model_name is None:
            args.served_model_name = [args.model]
        args.model = resolve_model(args.model)
        if args.tokenizer is None:
            args.tokenizer = args.model


def _configure_logging() -> None:
    """Show the library's INFO messages on stderr, as vLLM shows its own."""
    lib = logging.getLogger("enhanced_llm")
    if not lib.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(asctime)s [%(name)s] %(message)s", "%m-%d %H:%M:%S"))
        lib.addHandler(handler)
        lib.setLevel(logging.INFO)
        lib.propagate = False


def main(argv: list[str] | None = None) -> None:
    """Console entry point (``enhanced-llm``)."""
    from vllm.entrypoints.launchers.cli_args import validate_parsed_serve_args
    from vllm.entrypoints.serve.utils.api_utils import cli_env_setup
    from vllm.logger import configure_logging_from_args

    cli_env_setup()  # spawn for worker processes, as vLLM's CLI does
    args = build_parser().parse_args(argv)
    configure_logging_from_args(args)
    _configure_logging()
    try:
        options = options_from_args(args)
        _resolve_model(args)
    except (ConfigurationError, OSError) as exc:
        sys.exit(f"enhanced-llm: {exc}")
    if options.grpc_port is not None and not 0 < options.grpc_port <= 65535:
        sys.exit("enhanced-llm: --grpc-port must be between 1 and 65535")
    if options.grpc_port is not None and options.grpc_port == args.port:
        sys.exit("enhanced-llm: --grpc-port must differ from --port")
    args.grpc_port = None  # ours, not vLLM's Rust frontend (which validate_parsed_serve_args would demand)
    validate_parsed_serve_args(args)

    from .serving import serve

    serve(args, options)


if __name__ == "__main__":
    main()
