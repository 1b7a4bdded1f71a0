"""CY-LLM's REST gateway (seed 001) on ``enhanced-llm serve``: ``/api/v1/...`` next to vLLM's ``/v1``.

Same process, port, engine and caches as the OpenAI routes; the cache response headers
(``X-Cache`` ...) come from :class:`CacheScopeMiddleware` as there.

=====================================================  ==========================================
``POST /api/v1/inference``                             one answer (``object: text_completion``)
``POST /api/v1/inference/stream``                      SSE: ``text_completion.chunk`` per token (none for a
                                                       token that completes no character yet), the last
                                                       with ``finish_reason``, then ``[DONE]``
``POST /api/v1/inference/streamWithMetadata``          as ``stream``, with ``metadata``
``GET  /api/v1/models``, ``/api/v1/models/{modelId}``  the served model names
``GET  /api/v1/health``, ``/api/v1/health/details``    gateway, engine (coordinator), Redis
``/api/v1/training/...``                               404: training is not part of this library
=====================================================  ==========================================

* ``modelId`` is a served model name (``--served-model-name``, else the model).
* ``adapter`` is a ``--lora-modules`` name or an adapter path (needs ``--enable-lora``).
* ``metadata.tenant`` is a cache *sub-scope*: it goes into ``extra_args["enhanced_llm"]["scope"]``
  as a body scope does on ``/v1``, so it narrows within the scope the request context
  carries (the caller's tenant): tenants never share answers.
* ``offset`` is the character offset of the chunk's text in the answer; a cached answer
  streams in the same per-token chunks as a generated one.
* Errors: ``{"error": {"code", "message", "details"}}`` with ``INVALID_REQUEST`` (400),
  ``UNAUTHORIZED`` (401), ``MODEL_NOT_FOUND`` / ``NOT_FOUND`` (404), ``MODEL_NOT_READY`` (503),
  ``INTERNAL_ERROR`` (500). Every route needs a valid ``X-API-Key`` when the server has keys:
  the server's middleware checks it, with every other route (:mod:`.tenants`).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from pydantic import ValidationError
from starlette.requests import Request

from ..cyllm.chunks import TextChunk, chunked_generate
from ..cyllm.generation import GenerationOptions, build_sampling_params, lora_request_for
from .gateway_info import ServerInfo
from .gateway_schemas import ERROR_STATUS, InferenceBody, error_body, validation_details

__all__ = ["Gateway", "add_gateway_routes", "PREFIX"]

logger = logging.getLogger(__name__)

PREFIX = "/api/v1"
#: Tokens per SSE chunk (the seed's example streams one token per event).
SSE_CHUNK_TOKENS = 1
_WHOLE = 1 << 30


def _error(code: str, message: str, details: list[dict[str, Any]] | None = None) -> Any:
    from fastapi.responses import JSONResponse

    return JSONResponse(error_body(code, message, details), status_code=ERROR_STATUS[code])


def _engine_error(exc: BaseException) -> Any:
    """vLLM's errors as the gateway's codes (as the OpenAI routes map them to 400 / 500 / 503)."""
    from vllm.exceptions import VLLMClientError
    from vllm.v1.engine.exceptions import EngineDeadError

    if isinstance(exc, EngineDeadError):
        return _error("MODEL_NOT_READY", "the engine is not running")
    if isinstance(exc, (VLLMClientError, ValueError, TypeError, OverflowError)):  # as vLLM's handlers: a 4xx
        field = getattr(exc, "parameter", None)
        return _error("INVALID_REQUEST", str(exc), [{"type": type(exc).__name__, "field": field, "description": str(exc)}])
    logger.exception("gateway request failed")
    return _error("INTERNAL_ERROR", f"{type(exc).__name__}: {exc}")


class Gateway:
    """The ``/api/v1`` routes over one engine."""

    def __init__(self, engine: Any, info: ServerInfo) -> None:
        self.engine = engine
        self.info = info

    # -- request handling --------------------------------------------------------------------------

    async def _parse(self, request: Request) -> InferenceBody | Any:
        try:
            raw = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError, ValueError) as exc:
            return _error("INVALID_REQUEST", f"the body is not valid JSON: {exc}")
        if not isinstance(raw, dict):
            return _error("INVALID_REQUEST", "the body must be a JSON object")
        try:
            body = InferenceBody.model_validate(raw)
        except ValidationError as exc:
            details = validation_details(exc)
            return _error("INVALID_REQUEST", "invalid request: " + "; ".join(f"{d['field']}: {d['description']}" for d in details), details)
        if body.modelId not in self.info.served_names:
            return _error("MODEL_NOT_FOUND", f"Invalid model ID: {body.modelId}", [{
                "type": "model_not_found", "field": "modelId", "description": f"Model '{body.modelId}' is not configured",
            }])
        if getattr(self.engine, "errored", False):
            return _error("MODEL_NOT_READY", f"model '{body.modelId}' is not ready")
        return body

    def _generate(self, body: InferenceBody, request_id: str, chunk_tokens: int, final_only: bool = False) -> AsyncIterator[TextChunk]:
        from vllm.sampling_params import RequestOutputKind

        g = body.generation
        options = GenerationOptions(g.maxNewTokens, g.temperature, g.topP, g.repetitionPenalty)
        tenant = body.metadata.tenant if body.metadata is not None else None
        params = build_sampling_params(
            options, scope=tenant or None, output_kind=RequestOutputKind.FINAL_ONLY if final_only else None
        )
        lora = lora_request_for(body.adapter, self.info.lora_requests())
        return chunked_generate(self.engine, body.prompt, params, request_id, chunk_tokens, lora)

    async def _first(self, chunks: AsyncIterator[TextChunk]) -> TextChunk | Any:
        """The first chunk, or the error response: errors before any output are plain HTTP errors."""
        try:
            return await anext(chunks)
        except StopAsyncIteration:
            return _error("INTERNAL_ERROR", "the engine returned no output")
        except Exception as exc:  # noqa: BLE001 - mapped to the documented codes
            return _engine_error(exc)

    # -- routes ----------------------------------------------------------------------------------------

    async def inference(self, request: Request) -> Any:
        from fastapi.responses import JSONResponse

        body = await self._parse(request)
        if not isinstance(body, InferenceBody):
            return body
        request_id = f"gen-{uuid.uuid4().hex}"
        chunks = self._generate(body, request_id, _WHOLE, final_only=True)
        texts: list[str] = []
        last = await self._first(chunks)
        if not isinstance(last, TextChunk):
            return last
        try:
            texts.append(last.text)
            async for last in chunks:
                texts.append(last.text)
        except Exception as exc:  # noqa: BLE001
            return _engine_error(exc)
        finally:
            await chunks.aclose()
        return JSONResponse({
            "id": request_id, "modelId": body.modelId, "object": "text_completion", "created": int(time.time()),
            "choices": [{"index": 0, "text": "".join(texts), "finish_reason": last.finish_reason}],
            "usage": {
                "prompt_tokens": last.prompt_tokens, "completion_tokens": last.completion_tokens,
                "total_tokens": last.prompt_tokens + last.completion_tokens,
            },
        })

    async def stream(self, request: Request) -> Any:
        return await self._stream(request, with_metadata=False)

    async def stream_with_metadata(self, request: Request) -> Any:
        return await self._stream(request, with_metadata=True)

    async def _stream(self, request: Request, with_metadata: bool) -> Any:
        from fastapi.responses import StreamingResponse

        body = await self._parse(request)
        if not isinstance(body, InferenceBody):
            return body
        request_id = f"gen-{uuid.uuid4().hex}"
        trace_id = body.metadata.traceId if with_metadata and body.metadata is not None else None
        chunks = self._generate(body, request_id, SSE_CHUNK_TOKENS)
        first = await self._first(chunks)
        if not isinstance(first, TextChunk):
            await chunks.aclose()
            return first

        def event(chunk: TextChunk) -> str:
            choice: dict[str, Any] = {"index": 0, "text": chunk.text, "offset": chunk.offset}
            if chunk.finish_reason is not None:
                choice["finish_reason"] = chunk.finish_reason
            data: dict[str, Any] = {"id": request_id, "object": "text_completion.chunk", "choices": [choice]}
            if trace_id is not None:
                data["traceId"] = trace_id
            return f"data: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n"

        async def events() -> AsyncIterator[str]:
            try:
                if first.text or first.finish_reason is not None:
                    yield event(first)
                async for chunk in chunks:
                    if chunk.text or chunk.finish_reason is not None:  # a token completing no character sends nothing
                        yield event(chunk)
            except Exception as exc:  # noqa: BLE001 - the status line is gone: the error is an event
                failure = _engine_error(exc)
                yield f"data: {failure.body.decode()}\n\n"
            finally:
                await chunks.aclose()  # a client that went away aborts the request
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    async def models(self, request: Request) -> Any:
        from fastapi.responses import JSONResponse

        return JSONResponse(self.info.models())

    async def model(self, request: Request) -> Any:
        from fastapi.responses import JSONResponse

        model_id = request.path_params["model_id"]
        if model_id not in self.info.served_names:
            return _error("MODEL_NOT_FOUND", f"Invalid model ID: {model_id}", [{
                "type": "model_not_found", "field": "modelId", "description": f"Model '{model_id}' is not configured",
            }])
        return JSONResponse(self.info.model(model_id, detailed=True))

    async def health(self, request: Request) -> Any:
        return await self._health(request, detailed=False)

    async def health_details(self, request: Request) -> Any:
        return await self._health(request, detailed=True)

    async def _health(self, request: Request, detailed: bool) -> Any:
        from fastapi.responses import JSONResponse

        status, body = await self.info.health(detailed)
        return JSONResponse(body, status_code=status)

    async def training(self, request: Request) -> Any:
        return _error("NOT_FOUND", "training is not part of enhanced-llm: run CY-LLM's trainer for /api/v1/training", [{
            "type": "not_supported", "field": None, "description": f"{request.method} {request.url.path} is not served here",
        }])

    async def not_found(self, request: Request) -> Any:
        return _error("NOT_FOUND", f"no route {request.method} {request.url.path}")


def add_gateway_routes(app: Any, engine: Any, args: Any) -> Gateway:
    """Register the ``/api/v1`` routes on vLLM's app (after ``init_app_state``)."""
    from fastapi import APIRouter

    serving_models = getattr(app.state, "openai_serving_models", None)
    names = [p.name for p in getattr(serving_models, "base_model_paths", None) or ()]
    names = names or list(getattr(args, "served_model_name", None) or [args.model])
    gateway = Gateway(engine, ServerInfo(engine, names, serving_models))
    router = APIRouter()
    every = ["GET", "POST", "PUT", "DELETE", "PATCH"]
    router.add_api_route(f"{PREFIX}/inference", gateway.inference, methods=["POST"], include_in_schema=True)
    router.add_api_route(f"{PREFIX}/inference/stream", gateway.stream, methods=["POST"])
    router.add_api_route(f"{PREFIX}/inference/streamWithMetadata", gateway.stream_with_metadata, methods=["POST"])
    router.add_api_route(f"{PREFIX}/models", gateway.models, methods=["GET"])
    router.add_api_route(f"{PREFIX}/models/{{model_id:path}}", gateway.model, methods=["GET"])
    router.add_api_route(f"{PREFIX}/health", gateway.health, methods=["GET"])
    router.add_api_route(f"{PREFIX}/health/details", gateway.health_details, methods=["GET"])
    router.add_api_route(f"{PREFIX}/training/{{rest:path}}", gateway.training, methods=every)
    router.add_api_route(f"{PREFIX}/{{rest:path}}", gateway.not_found, methods=every, include_in_schema=False)
    app.include_router(router)
    return gateway
