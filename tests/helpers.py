"""Helpers for reading a request's outputs the way a client would."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vllm.sampling_params import RequestOutputKind


@dataclass
class Result:
    """A finished request, choices accumulated by index whatever the output kind."""

    texts: dict[int, str] = field(default_factory=dict)
    token_ids: dict[int, list[int]] = field(default_factory=dict)
    finish_reasons: dict[int, str | None] = field(default_factory=dict)
    prompt_token_ids: list[int] | None = None
    num_outputs: int = 0
    metadata: dict[str, Any] = field(default_factory=dict)
    finished: bool = False

    def answer(self) -> tuple:
        return (self.texts, self.token_ids, self.finish_reasons, self.prompt_token_ids)


async def run(llm, prompt, params, request_id) -> Result:
    result = Result()
    delta = params.output_kind == RequestOutputKind.DELTA
    async for out in llm.generate(prompt, params, request_id):
        result.num_outputs += 1
        for c in out.outputs:
            if delta:
                result.texts[c.index] = result.texts.get(c.index, "") + c.text
                result.token_ids.setdefault(c.index, []).extend(c.token_ids)
            else:
                result.texts[c.index] = c.text
                result.token_ids[c.index] = list(c.token_ids)
            result.finish_reasons[c.index] = c.finish_reason
        result.prompt_token_ids = list(out.prompt_token_ids or [])
        result.metadata = getattr(out, "metadata", {})
        result.finished = out.finished
    return result
