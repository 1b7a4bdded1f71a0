"""The CY-LLM gateway's request bodies and error body (seed 001), as pydantic models."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = [
    "GenerationBody", "MetadataBody", "InferenceBody", "error_body", "validation_details", "ERROR_STATUS",
]

#: The documented error codes and their HTTP status (``UNAUTHORIZED`` and ``NOT_FOUND`` added
#: for the 401 the seed documents without a code and for routes this library does not offer).
ERROR_STATUS: dict[str, int] = {
    "INVALID_REQUEST": 400,
    "UNAUTHORIZED": 401,
    "NOT_FOUND": 404,
    "MODEL_NOT_FOUND": 404,
    "TRAINING_JOB_NOT_FOUND": 404,
    "RATE_LIMITED": 429,
    "INTERNAL_ERROR": 500,
    "MODEL_NOT_READY": 503,
    "INSUFFICIENT_RESOURCES": 503,
}


class GenerationBody(BaseModel):
    """``generation``: CY-LLM's sampling parameters with their documented defaults."""

    model_config = ConfigDict(extra="ignore")

    maxNewTokens: int = Field(default=256, ge=1, description="Most tokens to generate.")
    temperature: float = Field(default=0.7, ge=0.0, le=2.0, description="Sampling temperature (0.0-2.0).")
    topP: float = Field(default=0.95, gt=0.0, le=1.0, description="Top-p sampling mass.")
    repetitionPenalty: float = Field(default=1.0, gt=0.0, description="Repetition penalty (1.0: none).")


class MetadataBody(BaseModel):
    """``metadata`` of ``streamWithMetadata``: tracing and the tenant whose cache entries the request uses."""

    model_config = ConfigDict(extra="ignore")

    traceId: str | None = Field(default=None, description="Trace id, echoed in every chunk.")
    tenant: str | None = Field(default=None, description="Tenant: a cache sub-scope within the caller's own scope.")
    playerId: str | None = Field(default=None, description="Player id (game scenarios); not used for caching.")
    locale: str | None = Field(default=None, description="Locale, e.g. zh-CN; not used for caching.")


class InferenceBody(BaseModel):
    """The body of ``/api/v1/inference``, ``/inference/stream`` and ``/inference/streamWithMetadata``."""

    model_config = ConfigDict(extra="ignore")

    modelId: str = Field(min_length=1, description="The served model name.")
    prompt: str = Field(min_length=1, description="The prompt text.")
    adapter: str | None = Field(default=None, description="LoRA adapter: a --lora-modules name or a path.")
    generation: GenerationBody = Field(default_factory=GenerationBody)
    metadata: MetadataBody | None = None


def error_body(code: str, message: str, details: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """``{"error": {"code", "message", "details"}}``."""
    return {"error": {"code": code, "message": message, "details": details or []}}


def validation_details(exc: ValidationError) -> list[dict[str, Any]]:
    """Pydantic errors as the seed's ``details`` items: ``type``, ``field``, ``description``."""
    return [
        {"type": err["type"], "field": ".".join(str(p) for p in err["loc"]) or None, "description": err["msg"]}
        for err in exc.errors(include_url=False)
    ]
