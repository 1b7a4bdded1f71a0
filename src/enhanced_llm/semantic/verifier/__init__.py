"""The semantic verifier: may a cached question answer a new one? (see :mod:`.common`).

``common`` holds the decision, ``analysis`` reads a text once, ``en`` and ``zh``
hold the per-language rules, ``synonyms`` the table of general synonyms.
"""

from enhanced_llm.semantic.verifier.common import (
    REASONS,
    Verdict,
    Verifier,
    differing_words,
    lexical_overlap,
    words_to_embed,
)

__all__ = ["REASONS", "Verdict", "Verifier", "differing_words", "lexical_overlap", "words_to_embed"]
