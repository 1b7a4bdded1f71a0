"""Text chunks of N tokens, as they are generated: what ``infer()``, the SSE routes and gRPC stream.

vLLM's DELTA outputs carry the new tokens of a step (one, normally) and their text.
:class:`TokenChunker` buffers them and emits one chunk per ``chunk_tokens`` tokens,
the moment the N-th token arrives. An output carrying more tokens at once (a cached
answer arrives whole; a coalesced follower may catch up several steps) is cut at the
same token boundaries: each piece's text is decoded from its tokens with a few tokens
of left context, and a character still incomplete at a cut goes to the next piece (as
vLLM's incremental detokenizer holds it back), so a cached answer comes back in the
chunks its live generation had. A cut whose decoded text is not a prefix of the rest of
the answer (a tokenizer whose decoding is not incremental) moves to the next boundary.
The pieces always concatenate to exactly the text the engine (or the cache) returned.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["TextChunk", "TokenChunker", "chunked_generate"]

#: Tokens of left context decoded with each piece of a long output.
_CONTEXT_TOKENS = 8


@dataclass(slots=True)
class TextChunk:
    """One streamed piece of an answer."""

    text: str
    """The chunk's text."""
    index: int
    """0, 1, 2 ... in stream order."""
    offset: int
    """Character offset of ``text`` in the whole answer."""
    num_tokens: int
    """Tokens the chunk covers."""
    finish_reason: str | None = None
    """Set on the last chunk: ``stop``, ``length``, ``abort`` ..."""
    prompt_tokens: int = 0
    """Prompt length in tokens (known from the first output on)."""
    completion_tokens: int = 0
    """Tokens generated up to and including this chunk."""
    metadata: dict[str, Any] = field(default_factory=dict)
    """The enhanced engine's output metadata (``cache_hit``, ``cache_source`` ...), empty for plain vLLM."""


class TokenChunker:
    """Groups DELTA outputs of one choice into chunks of ``chunk_tokens`` tokens."""

    def __init__(self, chunk_tokens: int, tokenizer: Any = None) -> None:
        if chunk_tokens < 1:
            raise ValueError("chunk_tokens must be >= 1")
        self.chunk_tokens = chunk_tokens
        self.tokenizer = tokenizer
        self._text: list[str] = []
        self._tokens = 0
        self._recent: list[int] = []  # the last token ids, context for decoding cuts
        self._index = 0
        self._offset = 0
        self._total_tokens = 0

    def feed(self, text: str, token_ids: Sequence[int], finish_reason: str | None = None) -> list[TextChunk]:
        """Chunks completed by this delta (the last one carries ``finish_reason`` when finished)."""
        ids = list(token_ids)
        out: list[TextChunk] = []
        room = self.chunk_tokens - self._tokens
        if len(ids) <= room or self.tokenizer is None:
            self._append(text, len(ids), ids)
            if self._tokens >= self.chunk_tokens:
                out.append(self._emit())
        else:
            cuts = list(range(room, len(ids), self.chunk_tokens))
            context = self._recent
            for piece, n in self._cut(text, ids, cuts):
                self._append(piece, n, [])
                if self._tokens >= self.chunk_tokens:
                    out.append(self._emit())
            self._recent = (context + ids)[-_CONTEXT_TOKENS:]
        if finish_reason is not None:
            if self._tokens or any(self._text) or not out:
                out.append(self._emit())
            out[-1].finish_reason = finish_reason
        return out

    def _append(self, text: str, n: int, ids: list[int]) -> None:
        self._text.append(text)
        self._tokens += n
        self._recent = (self._recent + ids)[-_CONTEXT_TOKENS:]

    def _emit(self) -> TextChunk:
        text = "".join(self._text)
        self._total_tokens += self._tokens
        chunk = TextChunk(text, self._index, self._offset, self._tokens, completion_tokens=self._total_tokens)
        self._index += 1
        self._offset += len(text)
        self._text, self._tokens = [], 0
        return chunk

    def _cut(self, text: str, ids: list[int], cuts: list[int]) -> list[tuple[str, int]]:
        """``text`` (the decoding of ``ids``) cut at token positions ``cuts``: (piece, tokens) pairs.

        A cut that cannot be placed exactly merges its piece into the next one, so the
        pieces' texts always concatenate to ``text``.
        """
        pieces: list[tuple[str, int]] = []
        pos, start = 0, 0  # chars of text placed; token index where the current piece starts
        for cut in cuts:
            left = (self._recent + ids[:start])[-_CONTEXT_TOKENS:]
            done = len(_decode(self.tokenizer, left).rstrip("\ufffd")) if left else 0
            # as vLLM's detokenizer: a character still incomplete at the cut goes to the next piece
            piece = _decode(self.tokenizer, left + ids[start:cut])[done:].rstrip("\ufffd")
            if text.startswith(piece, pos):
                pieces.append((piece, cut - start))
                pos, start = pos + len(piece), cut
            # else: decoding differs from the engine's text here: the piece runs on to the next cut
        pieces.append((text[pos:], len(ids) - start))
        return pieces


def _decode(tokenizer: Any, ids: list[int]) -> str:
    return tokenizer.decode(ids, skip_special_tokens=True)


async def chunked_generate(
    engine: Any, prompt: Any, params: Any, request_id: str, chunk_tokens: int, lora_request: Any = None,
    tokenizer: Any = None, **generate_kwargs: Any,
) -> AsyncIterator[TextChunk]:
    """``engine.generate`` (DELTA output kind, one choice) as :class:`TextChunk` items, chunk by chunk.

    Cancelling the iteration (or closing it) cancels ``generate``, which aborts the
    request the way vLLM does for a client that went away. ``generate_kwargs`` (e.g.
    ``priority``) go to ``generate``.
    """
    if tokenizer is None:
        tokenizer = getattr(engine, "tokenizer", None)
    chunker = TokenChunker(chunk_tokens, tokenizer)
    prompt_tokens = 0
    async for output in engine.generate(prompt, params, request_id, lora_request=lora_request, **generate_kwargs):
        prompt_tokens = len(output.prompt_token_ids or ()) or prompt_tokens
        meta = dict(getattr(output, "metadata", None) or {})
        for completion in output.outputs[:1]:
            finish = completion.finish_reason if output.finished else None
            if output.finished and finish is None:
                finish = "stop"
            for chunk in chunker.feed(completion.text, completion.token_ids, finish):
                chunk.prompt_tokens = prompt_tokens
                chunk.metadata = meta
                yield chunk
