"""The last user message of a prompt rendered with the model's chat template.

A chat request reaches the engine as one rendered string: system prompt, earlier
turns and the new question, wrapped in the template's markers. Embedding that
whole string makes unrelated questions look alike (with a one-line system
prompt, "Who wrote Hamlet?" and "What is the boiling point of water?" go from
cosine 0.12 to 0.64 under MiniLM). So the semantic cache compares only the last
user message, and everything before it (the *context*) becomes part of the
scope: two questions can only match when their conversations up to the
question are identical.

:class:`ChatLayout` learns where a template puts a user message by rendering
sentinel conversations once, with no knowledge of any particular template:

* ``[user: A]``, generation prompt on   -> ``P + A + G``: ``G`` closes the user turn
  and opens the assistant's;
* ``[user: A, assistant: B, user: C]``  -> ``... + B + Y + C + G``: the user-turn
  opener ``U`` is the longest common suffix of ``P`` and ``Y``.

``split(text)`` then takes the text between the last ``U`` and the final ``G``.
The split is exact (``context + U + question + G == text``), so a wrong split
(a user message that itself contains ``U``) can only narrow matching, never
merge two different conversations.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

__all__ = ["ChatLayout"]

log = logging.getLogger(__name__)

_A, _B, _C = "QXSENTINELAQX", "QXSENTINELBQX", "QXSENTINELCQX"


@dataclass(frozen=True, slots=True)
class ChatLayout:
    """Where a chat template puts the last user message."""

    opener: str
    """Text right before every user message (e.g. ``"<|user|>\\n"``)."""
    closer: str
    """Text after the last user message when a generation prompt is added."""

    @classmethod
    def from_tokenizer(cls, tokenizer: Any) -> "ChatLayout | None":
        """Learn the layout of ``tokenizer``'s chat template; None when it has none or is unusual."""
        try:
            one = tokenizer.apply_chat_template([{"role": "user", "content": _A}], tokenize=False, add_generation_prompt=True)
            three = tokenizer.apply_chat_template(
                [{"role": "user", "content": _A}, {"role": "assistant", "content": _B}, {"role": "user", "content": _C}],
                tokenize=False, add_generation_prompt=True,
            )
        except Exception as exc:  # noqa: BLE001 - no template, or one that rejects these messages
            log.info("no chat layout (the template does not render sentinel turns): %r", exc)
            return None
        if not (isinstance(one, str) and isinstance(three, str)):
            return None
        if one.count(_A) != 1 or three.count(_B) != 1 or three.count(_C) != 1:
            return None
        before_a, closer = one.split(_A)
        if not closer or not three.endswith(_C + closer):
            return None
        between = three[three.index(_B) + len(_B) : three.index(_C)]
        opener = os.path.commonprefix([before_a[::-1], between[::-1]])[::-1]
        if not opener.strip():
            return None  # nothing marks a user turn: splitting would be guesswork
        return cls(opener=opener, closer=closer)

    def split(self, text: str) -> tuple[str, str] | None:
        """``(context, question)`` of a rendered chat prompt, or None when ``text`` is not one."""
        if not text.endswith(self.closer):
            return None
        body = text[: len(text) - len(self.closer)]
        at = body.rfind(self.opener)
        if at < 0:
            return None
        question = body[at + len(self.opener) :]
        if not question.strip():
            return None
        return body[:at], question
