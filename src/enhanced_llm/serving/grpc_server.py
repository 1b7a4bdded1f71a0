"""CY-LLM's gRPC ``AIService.StreamPredict`` on ``enhanced-llm serve --grpc-port PORT``.

A ``grpc.aio`` server on the server's own event loop, over the same engine and caches
as the HTTP routes. Each request streams ``StreamPredictResponse`` messages as tokens
are generated (``GRPC_CHUNK_TOKENS`` tokens each, CY-LLM's ``stream_chunk_size``
default); the last has ``end_of_stream`` set. The cache scope follows the tenant model of the
HTTP routes (:mod:`.tenants`): the tenant of the caller's ``x-api-key`` (``authorization:
Bearer`` also works), narrowed by ``metadata.tenant`` as a sub-scope. With keys configured
(``--api-key``, ``--tenant-keys``) calls without a valid key get ``UNAUTHENTICATED``; an unknown ``model_id`` is ``NOT_FOUND``, an
empty prompt or invalid parameters ``INVALID_ARGUMENT``, a dead engine ``UNAVAILABLE``.
A client that cancels the call aborts the request.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

from ..cyllm.chunks import chunked_generate
from ..cyllm.generation import DEFAULT_GENERATION, GenerationOptions, build_sampling_params, lora_request_for
from .context import RequestCacheContext
from .gateway_info import ServerInfo
from .tenants import DEFAULT_TENANT, KeyRing, TenantPolicy

__all__ = ["start_grpc_server", "GRPC_CHUNK_TOKENS"]

logger = logging.getLogger(__name__)

GRPC_CHUNK_TOKENS = 4
STOP_GRACE_S = 5.0


def _import_grpc() -> tuple[Any, Any, Any]:
    try:
        import grpc

        from ..cyllm.proto import ai_service_pb2, ai_service_pb2_grpc
    except ImportError as exc:  # pragma: no cover - grpcio is in the 'all' extra
        raise ImportError(f"--grpc-port needs grpcio and protobuf: pip install 'enhanced-llm[all]' ({exc})") from exc
    return grpc, ai_service_pb2, ai_service_pb2_grpc


def _options(generation: Any) -> GenerationOptions:
    def pick(name: str, default: Any) -> Any:
        return getattr(generation, name) if generation.HasField(name) else default

    return GenerationOptions(
        max_new_tokens=pick("max_new_tokens", DEFAULT_GENERATION.max_new_tokens),
        temperature=pick("temperature", DEFAULT_GENERATION.temperature),
        top_p=pick("top_p", DEFAULT_GENERATION.top_p),
        repetition_penalty=pick("repetition_penalty", DEFAULT_GENERATION.repetition_penalty),
    )


def _caller(keys: KeyRing, metadata: dict[str, str]) -> TenantPolicy | None:
    """The caller's policy from its key (as the HTTP middleware does), or None without a valid key."""
    if not keys:
        return TenantPolicy(DEFAULT_TENANT)  # no keys configured: nobody is identified
    key = metadata.get("x-api-key")
    if key is None:
        scheme, _, token = (metadata.get("authorization") or "").partition(" ")
        key = token if scheme.lower() == "bearer" else None
    return keys.authenticate(key) if key else None


def _servicer(engine: Any, info: ServerInfo, keys: KeyRing, chunk_tokens: int) -> Any:
    grpc, pb2, pb2_grpc = _import_grpc()
    from vllm.exceptions import VLLMClientError
    from vllm.v1.engine.exceptions import EngineDeadError

    priority_scheduling = getattr(engine.vllm_config.scheduler_config, "policy", "fcfs") == "priority"

    class AIServiceServicer(pb2_grpc.AIServiceServicer):
        async def StreamPredict(self, request: Any, context: Any) -> AsyncIterator[Any]:  # noqa: N802 - gRPC's name
            policy = _caller(keys, {k.lower(): v for k, v in (context.invocation_metadata() or ())})
            if policy is None:
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, "a valid x-api-key is required")
            model_id = request.model_id or info.served_names[0]
            if model_id not in info.served_names:
                await context.abort(grpc.StatusCode.NOT_FOUND, f"Model '{model_id}' is not configured")
            if not request.prompt:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "prompt is required")
            trace_id = request.metadata.trace_id or uuid.uuid4().hex
            try:
                scope = RequestCacheContext(tenant=policy.tenant, policy=policy).scope_for(request.metadata.tenant or None)
                params = build_sampling_params(_options(request.generation), scope=scope)
                lora = lora_request_for(request.adapter or None, info.lora_requests())
            except (ValueError, VLLMClientError) as exc:  # a bad sub-scope is a VLLMValidationError
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            extra = {"priority": request.priority} if priority_scheduling else {}
            chunks = chunked_generate(engine, request.prompt, params, f"grpc-{trace_id}-{uuid.uuid4().hex[:8]}",
                                      chunk_tokens, lora, **extra)
            index = 0
            try:
                async for chunk in chunks:
                    if not chunk.text and chunk.finish_reason is None:
                        continue  # tokens that complete no character yet
                    yield pb2.StreamPredictResponse(
                        trace_id=trace_id, chunk=chunk.text, end_of_stream=chunk.finish_reason is not None, index=index,
                    )
                    index += 1
            except EngineDeadError:
                await context.abort(grpc.StatusCode.UNAVAILABLE, "the engine is not running")
            except (VLLMClientError, ValueError, TypeError) as exc:  # vLLM's validation (prompt too long ...)
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            finally:
                await chunks.aclose()  # a cancelled call aborts its request

    return AIServiceServicer()


async def start_grpc_server(
    engine: Any, info: ServerInfo, keys: KeyRing, host: str | None, port: int, chunk_tokens: int = GRPC_CHUNK_TOKENS,
) -> Any:
    """Start the ``grpc.aio`` server on the running loop; returns it (``await server.stop(grace)`` to stop)."""
    grpc, _, pb2_grpc = _import_grpc()
    server = grpc.aio.server()
    pb2_grpc.add_AIServiceServicer_to_server(_servicer(engine, info, keys, chunk_tokens), server)
    address = f"{host or '0.0.0.0'}:{port}"
    if server.add_insecure_port(address) == 0:
        raise SystemExit(f"enhanced-llm serve: cannot bind the gRPC port {address}")
    await server.start()
    logger.info("gRPC AIService.StreamPredict on %s", address)
    return server
