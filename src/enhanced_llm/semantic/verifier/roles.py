"""Role swaps by word order, for any language: the same words, in other roles.

"Does A cause B?" / "Does B cause A?", "convert Excel to CSV" / "convert CSV to Excel",
"妈妈的哥哥" / "哥哥的妈妈", "狗咬伤了猫" / "猫咬伤了狗": two content words change places while
what stands between them (the relation: a verb, "to", "than", "'s", 的, 比, 到, 把...) stays the same.
A moved phrase ("In Python, how do I reverse a list?" / "How do I reverse a list in Python?") changes
what stands between the words, so it is not a swap; nor is a symmetric relation ("X and Y", "X or Y",
"compare X with Y", 猫和狗) or a change of voice (the passive "by", 被, on one side only).

:func:`role_conflict` catches the other form of the same change: one word after opposite
prepositions ("flights to Paris from Rome" / "flights from Paris to Rome", 借钱给朋友 / 向朋友借钱).

Each language gives its tokens (:func:`.en_rules.order_tokens`, jieba's words) and its word lists.
"""

from __future__ import annotations

from collections import Counter
from typing import Collection

__all__ = ["role_conflict", "swapped_pair"]


def swapped_pair(
    q: tuple[str, ...], c: tuple[str, ...], content: Collection[str], *, drop: Collection[str] = (),
    symmetric: Collection[str] = (), passive: Collection[str] = (), directed: Collection[str] = (),
    loose: Collection[str] = (),
) -> tuple[str, str] | None:
    """Two ``content`` tokens that occur once in each text, in the other order, with the same tokens
    between them (``drop`` ignored; non-empty). With ``loose`` (tokens that may differ, e.g. particles),
    the tokens between them may differ in those only. None when there is no such pair."""
    tq = [t for t in q if t not in drop]
    tc = [t for t in c if t not in drop]
    nq, nc = Counter(tq), Counter(tc)
    pos_c = {t: i for i, t in enumerate(tc)}
    cands = [(i, t) for i, t in enumerate(tq) if t in content and nq[t] == 1 and nc.get(t) == 1]
    for a, (i, x) in enumerate(cands):
        for j, y in cands[a + 1 :]:
            k, m = pos_c[y], pos_c[x]
            if k >= m or x == y:
                continue
            mid_q, mid_c = tq[i + 1 : j], tc[k + 1 : m]
            if [t for t in mid_q if t not in loose] != [t for t in mid_c if t not in loose]:
                continue
            core = [t for t in mid_q if t not in loose]
            if not core:
                continue
            if all(t in symmetric for t in core) and not (i and tq[i - 1] in directed):
                continue  # X and Y / Y and X (but "replace X with Y" is directed)
            if any(t in passive for t in mid_q) != any(t in passive for t in mid_c):
                continue
            return x, y
    return None


def role_conflict(
    q: tuple[str, ...], c: tuple[str, ...], content: Collection[str], conflicts: Collection[tuple[str, str]],
    *, drop: Collection[str] = (),
) -> tuple[str, str, str] | None:
    """A ``content`` token that follows one preposition of a ``conflicts`` pair in one text and the
    other in the other text ("to Paris" / "from Paris"): (token, marker in q, marker in c)."""
    def before(tokens: tuple[str, ...]) -> dict[str, str]:
        seq = [t for t in tokens if t not in drop]
        out: dict[str, str] = {}
        for i, t in enumerate(seq[1:], 1):
            if t in content:
                out.setdefault(t, seq[i - 1])
        return out

    bq, bc = before(q), before(c)
    for t, mq in bq.items():
        mc = bc.get(t)
        if mc and mc != mq and ((mq, mc) in conflicts or (mc, mq) in conflicts):
            return t, mq, mc
    return None
